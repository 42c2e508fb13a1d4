//! A LiveKit Bridge and its Meetings against the real control plane (pods under kwok), with the
//! operator's clock under the test's control: the children a LiveKit Bridge becomes, its
//! generated Secret, join links signed with its API secret and keyed with the Meeting's E2EE
//! passphrase, the passphrase kept across a deleted credentials Secret and replaced only on
//! a rekey, `OutOfBand` links, the open-rooms list following the schedule, and an API secret
//! rotation reissuing the links. Nothing secret or personal reaches the operator's log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::operator::Operator;
use common::{cluster, create_tls_secret, label_bridge, secret_strings as data, wait_ready};
use conclave::api::E2eePolicy;
use conclave::api::meeting::KeyDistribution;
use conclave::api::{Bridge, Meeting};
use conclave::engine::livekit::token::{self, Claims};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// Claims of a token signed with `secret`, not checked against the real clock (the tokens'
/// window follows the operator's clock, which the test moves).
fn decode(t: &str, secret: &[u8]) -> Option<Claims> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_nbf = false;
    v.validate_exp = false;
    v.required_spec_claims.clear();
    jsonwebtoken::decode::<Claims>(t, &jsonwebtoken::DecodingKey::from_secret(secret), &v)
        .ok()
        .map(|d| d.claims)
}

fn claims(t: &str, secret: &[u8]) -> Claims {
    decode(t, secret).expect("signed with the Bridge's LiveKit API secret")
}

/// `(token, key)` of a link `https://live.example.com/<room>?<param>=<token>[#key=<key>]`.
fn parts(link: &str, room: &str, param: &str) -> (String, Option<String>) {
    let rest = link
        .strip_prefix(&format!("https://live.example.com/{room}?{param}="))
        .unwrap_or_else(|| panic!("link shape: {param} for {room}"));
    match rest.split_once("#key=") {
        Some((t, k)) => (t.to_string(), Some(k.to_string())),
        None => (rest.to_string(), None),
    }
}

async fn wait_secret(
    secrets: &Api<Secret>,
    name: &str,
    what: &str,
    ok: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    wait_for(what, Duration::from_secs(60), || {
        let secrets = secrets.clone();
        let ok = &ok;
        async move {
            let d = data(&secrets.get_opt(name).await.ok()??);
            ok(&d).then_some(d)
        }
    })
    .await
}

async fn wait_rooms(configmaps: &Api<ConfigMap>, want: &str) {
    wait_for(&format!("rooms {want}"), Duration::from_secs(60), || {
        let configmaps = configmaps.clone();
        async move {
            let cm = configmaps.get_opt("live-rooms").await.ok()??;
            (cm.data?.get("rooms.json")?.trim_end() == want).then_some(())
        }
    })
    .await;
}

/// Returns once a reconcile of the Bridge has started after this call: two completions are
/// seen (reconciles of one object run one at a time), each brought by a label change.
async fn settle(operator: &Operator, bridges: &Api<Bridge>) {
    let needles = ["reconciled", "bridge=", "/live"];
    let seen = operator.log_count(&needles);
    for (i, n) in [1, 2].into_iter().enumerate() {
        label_bridge(bridges, "live", "settle", &format!("{seen}-{i}")).await;
        wait_for("a Bridge reconcile", Duration::from_secs(30), || {
            let count = operator.log_count(&needles);
            async move { (count >= seen + n).then_some(()) }
        })
        .await;
    }
}

async fn rooms_now(configmaps: &Api<ConfigMap>) -> String {
    let cm = configmaps.get("live-rooms").await.expect("rooms ConfigMap");
    cm.data.expect("data")["rooms.json"].trim_end().to_string()
}

async fn advance(operator: &Operator, bridges: &Api<Bridge>, to: DateTime<Utc>) {
    operator.set_now(to);
    label_bridge(bridges, "live", "tick", &to.timestamp().to_string()).await;
}

#[tokio::test]
async fn livekit_bridge_meetings_links_and_rooms() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "livekit").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Utc::now();
    let operator = Operator::with_clock("conclave-livekit-test", &ns, dir.path(), t0);
    create_tls_secret(&client, &ns, "live-cert", "live.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "live"},
        "spec": {"domain": "live.example.com", "engine": "LiveKit", "tls": {"secretName": "live-cert"},
                 "turn": {"host": "198.51.100.30"}, "sfu": {"replicas": 2, "media": {"port": 31740}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    let ready = wait_ready(&bridges, "live").await;
    let signalling = ready
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "SignallingReady")
        .expect("SignallingReady");
    assert_eq!(signalling.message, "the join page (web) and Redis");

    // What a LiveKit Bridge becomes: no Jitsi component, the page, Redis, two SFU replicas.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = deployments
        .list(&Default::default())
        .await
        .expect("deployments")
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["live-redis", "live-turn", "live-web"]);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    for i in 0..2 {
        statefulsets.get(&format!("live-sfu-{i}")).await.expect("SFU replica");
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let sfu1 = configmaps.get("live-sfu-1-config").await.expect("replica config");
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&sfu1.data.expect("data")["livekit.yaml"]).expect("livekit.yaml parses");
    assert_eq!(yaml["rtc"]["udp_port"], 31741);
    assert_eq!(
        yaml["redis"]["address"],
        format!("live-redis.{ns}.svc.cluster.local:6379")
    );
    assert!(yaml["rtc"]["node_ip"].is_string(), "the node's ExternalIP: {yaml}");

    // The generated Secret holds LiveKit's keys, and nothing of Jitsi's.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let generated = data(&secrets.get("live-secrets").await.expect("generated Secret"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        ["livekit-api-key", "livekit-api-secret", "redis-password", "turn-secret"]
    );
    let (api_key, api_secret) = (
        generated["livekit-api-key"].clone(),
        generated["livekit-api-secret"].clone(),
    );
    assert!(api_secret.len() >= 32, "LiveKit refuses shorter secrets");

    // A scheduled Meeting: links signed with the API secret, keyed with the passphrase.
    let start = t0 + chrono::Duration::hours(1);
    let end = t0 + chrono::Duration::hours(2);
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let meeting: Meeting = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": "review"},
        "spec": {"bridge": "live", "start": start, "end": end, "maxParticipants": 3,
                 "participants": [{"name": "alice", "displayName": "Alice Liddell", "moderator": true},
                                  {"name": "bob"}, {"name": "carol"}],
                 "guests": {"allowed": true, "lobby": true}}
    }))
    .expect("meeting");
    meetings
        .create(&PostParams::default(), &meeting)
        .await
        .expect("meeting");
    let links = wait_secret(&secrets, "review-credentials", "links", |d| d.len() == 4).await;
    let passphrase = data(&secrets.get("review-e2ee").await.expect("passphrase Secret"))["passphrase"].clone();
    assert_eq!(passphrase.len(), 43, "32 bytes, base64url");
    let (t, k) = parts(&links["alice"], "review", "token");
    assert_eq!(k.as_deref(), Some(passphrase.as_str()), "the key rides in the fragment");
    let alice = claims(&t, api_secret.as_bytes());
    assert_eq!((alice.iss.as_str(), alice.sub.as_str()), (api_key.as_str(), "alice"));
    assert_eq!(alice.name, "Alice Liddell");
    assert!(alice.video.room_join && alice.video.room_admin);
    assert_eq!(alice.video.room, "review");
    assert_eq!(alice.nbf, (start - chrono::Duration::minutes(10)).timestamp());
    assert_eq!(alice.exp, (end + chrono::Duration::minutes(15)).timestamp());
    let policy = token::page_metadata(&alice).expect("metadata");
    assert_eq!(
        (policy.e2ee, policy.key_distribution),
        (E2eePolicy::Required, KeyDistribution::Link)
    );
    let bob = claims(&parts(&links["bob"], "review", "token").0, api_secret.as_bytes());
    assert!(bob.video.room_join && !bob.video.room_admin);
    let (g, gk) = parts(&links["guest"], "review", "guest");
    assert_eq!(gk.as_deref(), Some(passphrase.as_str()));
    let guest = claims(&g, api_secret.as_bytes());
    assert!(!guest.video.room_join, "a guest link cannot join by itself");
    assert!(decode(&g, b"another-secret-another-secret-xyz").is_none());

    // Until its window opens the room does not exist.
    settle(&operator, &bridges).await;
    assert_eq!(rooms_now(&configmaps).await, r#"{"rooms":[]}"#);

    // A credentials Secret deleted by hand comes back with the same links and the same key.
    secrets
        .delete("review-credentials", &DeleteParams::default())
        .await
        .expect("delete credentials");
    let restored = wait_secret(&secrets, "review-credentials", "links restored", |d| d.len() == 4).await;
    assert_eq!(restored, links, "same links after a deletion");

    // A rekey replaces the passphrase once and reissues every link with it.
    meetings
        .patch(
            "review",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"conclave.dev/rekey": "1"}}})),
        )
        .await
        .expect("rekey");
    let rekeyed = wait_secret(&secrets, "review-e2ee", "new passphrase", |d| {
        d["passphrase"] != passphrase
    })
    .await;
    let new_key = rekeyed["passphrase"].clone();
    let relinked = wait_secret(&secrets, "review-credentials", "links with the new key", |d| {
        d.values().all(|l| l.ends_with(&format!("#key={new_key}")))
    })
    .await;
    assert_eq!(
        parts(&relinked["alice"], "review", "token").0,
        t,
        "only the key changed, not the token"
    );
    // Reconciling again keeps it: wait for the Meeting's next reconcile, then look.
    let seen = operator.log_count(&["reconciled", "/review"]);
    label_bridge(&bridges, "live", "again", "1").await;
    wait_for("the Meeting reconciled again", Duration::from_secs(30), || {
        let n = operator.log_count(&["reconciled", "/review"]);
        async move { (n > seen).then_some(()) }
    })
    .await;
    assert_eq!(
        data(&secrets.get("review-e2ee").await.expect("e2ee"))["passphrase"],
        new_key,
        "a rekey happens once per annotation value"
    );

    // The room exists from 10 minutes before the start, with its limit, until the end.
    advance(&operator, &bridges, start - chrono::Duration::minutes(10)).await;
    wait_rooms(&configmaps, r#"{"rooms":[{"name":"review","maxParticipants":3}]}"#).await;

    // Rotating the API secret re-signs every link.
    bridges
        .patch(
            "live",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "conclave.dev/rotate-secrets": "r1", "conclave.dev/rotate-keys": "livekit-api-secret"}}})),
        )
        .await
        .expect("rotate");
    let rotated = wait_secret(&secrets, "live-secrets", "rotated API secret", |d| {
        d["livekit-api-secret"] != api_secret
    })
    .await;
    assert_eq!(rotated["livekit-api-key"], api_key, "only the named key rotates");
    assert_eq!(rotated["turn-secret"], generated["turn-secret"]);
    let resigned = wait_secret(&secrets, "review-credentials", "links re-signed", |d| {
        decode(
            &parts(&d["bob"], "review", "token").0,
            rotated["livekit-api-secret"].as_bytes(),
        )
        .is_some()
    })
    .await;
    assert!(resigned["bob"].ends_with(&format!("#key={new_key}")), "the key stays");

    // OutOfBand: the links lose their key and the cluster forgets the passphrase.
    meetings
        .patch(
            "review",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"keyDistribution": "OutOfBand"}})),
        )
        .await
        .expect("out of band");
    wait_secret(&secrets, "review-credentials", "links without a key", |d| {
        d.values().all(|l| !l.contains('#'))
    })
    .await;
    wait_for("passphrase Secret deleted", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("review-e2ee").await.ok()?.is_none().then_some(()) }
    })
    .await;

    // At its end the room is gone, so its links join nothing any more.
    advance(&operator, &bridges, end).await;
    wait_rooms(&configmaps, r#"{"rooms":[]}"#).await;

    // Nothing secret or personal in the operator's log.
    let log = operator.log().join("\n");
    for needle in [
        api_secret.as_str(),
        rotated["livekit-api-secret"].as_str(),
        passphrase.as_str(),
        new_key.as_str(),
        t.as_str(),
        "Alice Liddell",
        generated["redis-password"].as_str(),
    ] {
        assert!(!log.contains(needle), "the operator's log holds a secret or a name");
    }
}
