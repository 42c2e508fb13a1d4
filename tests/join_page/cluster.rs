//! The Kubernetes side of the browser test, run inside the test's namespaces (the control plane
//! needs only loopback): the real local control plane (testenv), the real operator with a clock
//! the test moves, one LiveKit Bridge and its Meetings. What the servers and browsers get comes
//! from what the operator made: the API key, API secret and TURN secret from the Bridge's
//! generated Secret, every join link from a Meeting's credentials Secret, and the open rooms
//! from the Bridge's rooms ConfigMap.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use conclave::api::{Bridge, Meeting, Phase};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::common::operator::Operator;
use super::common::{cluster, label_bridge, object, secret_strings as data, wait_meeting, wait_ready};

pub const BRIDGE: &str = "meet";
/// The Bridge's domain: links start with `https://<DOMAIN>/`.
pub const DOMAIN: &str = "meet.test.example";
/// Where coturn listens; the Bridge announces TURN there.
const TURN_HOST: &str = "192.0.2.2";
const WAIT: Duration = Duration::from_secs(60);
/// The Required Meeting most steps live in, until its end.
pub const STANDUP: &str = "standup";
/// A Preferred Meeting.
pub const HALLWAY: &str = "hallway";
/// The Required Meeting of the Firefox call; like `hallway`, it outlives `standup`.
pub const FIRESIDE: &str = "fireside";

/// The Bridge's generated secrets that livekit-server, coturn and `conclave web` need.
pub struct Keys {
    pub api_key: String,
    pub api_secret: String,
    pub turn_secret: String,
}

pub struct Cluster {
    operator: Operator,
    bridges: Api<Bridge>,
    meetings: Api<Meeting>,
    secrets: Api<Secret>,
    configmaps: Api<ConfigMap>,
    pub keys: Keys,
}

impl Cluster {
    /// Control plane, operator (its clock at `now`, a file in `dir`) and a Ready LiveKit Bridge
    /// with `e2ee: Preferred`, so it can hold both Required and Preferred Meetings.
    pub async fn start(dir: &Path, now: DateTime<Utc>) -> Cluster {
        let client = cluster().client().await;
        let ns = testenv::namespace(&client, "join-page").await;
        let operator = Operator::with_clock("conclave-join-page-test", &ns, dir, now);
        let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
        bridges
            .create(
                &PostParams::default(),
                &object(json!({
                    "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": BRIDGE},
                    "spec": {"domain": DOMAIN, "engine": "LiveKit", "e2ee": "Preferred",
                             "turn": {"host": TURN_HOST}}
                })),
            )
            .await
            .expect("create the Bridge");
        wait_ready(&bridges, BRIDGE).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let generated = data(
            &secrets
                .get(&format!("{BRIDGE}-secrets"))
                .await
                .expect("generated Secret"),
        );
        let keys = Keys {
            api_key: generated["livekit-api-key"].clone(),
            api_secret: generated["livekit-api-secret"].clone(),
            turn_secret: generated["turn-secret"].clone(),
        };
        Cluster {
            operator,
            bridges,
            meetings: Api::namespaced(client.clone(), &ns),
            secrets,
            configmaps: Api::namespaced(client, &ns),
            keys,
        }
    }

    /// Creates Meeting `name` on the Bridge and returns its links (participant name or `guest`
    /// → URL) once its credentials Secret holds `links` of them.
    pub async fn meeting(&self, name: &str, spec: Value, links: usize) -> BTreeMap<String, String> {
        let mut spec = spec;
        spec["bridge"] = json!(BRIDGE);
        self.meetings
            .create(
                &PostParams::default(),
                &object(json!({"apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
                               "metadata": {"name": name}, "spec": spec})),
            )
            .await
            .expect("create the Meeting");
        let secret = format!("{name}-credentials");
        testenv::wait_for(&format!("{links} links in {secret}"), WAIT, || async {
            let d = data(&self.secrets.get_opt(&secret).await.ok()??);
            (d.len() == links).then_some(d)
        })
        .await
    }

    /// The rooms ConfigMap's data, once its list of open rooms is exactly `rooms`.
    pub async fn rooms(&self, rooms: &[&str]) -> BTreeMap<String, String> {
        let name = format!("{BRIDGE}-rooms");
        testenv::wait_for(&format!("{name} to list exactly {rooms:?}"), WAIT, || async {
            let d = self.configmaps.get_opt(&name).await.ok()??.data?;
            let list: Value = serde_json::from_str(d.get("rooms.json")?).ok()?;
            let names: Vec<&str> = list["rooms"]
                .as_array()?
                .iter()
                .filter_map(|r| r["name"].as_str())
                .collect();
            (names == rooms).then_some(d)
        })
        .await
    }

    /// Moves the operator's clock to `to` and has it reconcile the Bridge (and so its
    /// Meetings) now rather than at the requeue it computed against the old time; waits until
    /// Meeting `name` is Ended and its links are gone.
    pub async fn move_clock_past_end(&self, name: &str, to: DateTime<Utc>) {
        self.operator.set_now(to);
        label_bridge(&self.bridges, BRIDGE, "clock", &to.timestamp().to_string()).await;
        wait_meeting(&self.meetings, name, "Ended", |m| {
            m.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p == Phase::Ended)
        })
        .await;
        let secret = format!("{name}-credentials");
        testenv::wait_for(&format!("{secret} to be deleted"), WAIT, || async {
            matches!(self.secrets.get_opt(&secret).await, Ok(None)).then_some(())
        })
        .await;
    }
}

/// `standup`'s end, for Meetings created at `now`.
pub fn standup_end(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::hours(1)
}

/// The Meetings: `standup` (Required, every step but the Preferred and Firefox ones, ends
/// first), `hallway` (Preferred) and `fireside` (Required, for Firefox). Spec and link count.
pub fn meetings(now: DateTime<Utc>) -> [(&'static str, Value, usize); 3] {
    let start = now - chrono::Duration::minutes(5);
    let later = now + chrono::Duration::hours(2);
    let who = |name: &str, display: &str| json!({"name": name, "displayName": display});
    [
        (
            STANDUP,
            json!({"e2ee": "Required", "start": start, "end": standup_end(now),
                   "maxParticipants": 10, "guests": {"allowed": true, "lobby": true},
                   "participants": [
                       {"name": "alice", "displayName": "Alice Moderator", "moderator": true},
                       who("bob", "Bob Member"), who("carol", "Carol Wrongkey"), who("erin", "Erin Typed"),
                       who("mallory", "Mallory Plaintext"), who("gopher", "Gopher Plaintext")]}),
            7,
        ),
        (
            HALLWAY,
            json!({"e2ee": "Preferred", "start": start, "end": later,
                   "participants": [who("pat", "Pat Encrypted"), who("quinn", "Quinn Plain")]}),
            2,
        ),
        (
            FIRESIDE,
            json!({"e2ee": "Required", "start": start, "end": later,
                   "participants": [who("fiona", "Fiona Firefox"), who("felix", "Felix Firefox")]}),
            2,
        ),
    ]
}

/// Writes a ConfigMap's `data` into `dir` the way the kubelet projects a mounted ConfigMap
/// (its AtomicWriter): the files go into a fresh hidden timestamped directory, the `..data`
/// symlink is swapped to it in one rename, and each key is a symlink through `..data`, so a
/// reader never sees half an update. This copy is the one stand-in for the cluster here: no
/// kubelet runs pods in the test, so the test plays it for `conclave web`'s rooms volume.
pub fn project(dir: &Path, data: &BTreeMap<String, String>) {
    std::fs::create_dir_all(dir).expect("volume directory");
    let old = std::fs::read_link(dir.join("..data")).ok();
    let stamp = format!("..{}", Utc::now().format("%Y_%m_%d_%H_%M_%S.%9f"));
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh).expect("timestamped directory");
    for (key, value) in data {
        std::fs::write(fresh.join(key), value).expect("write a projected key");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for key in data.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link).expect("key symlink");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove the previous projection");
    }
}
