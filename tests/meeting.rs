//! The Meeting reconciler against the real control plane, with the operator's clock under the
//! test's control: join links and their tokens, the phase moving with the clock, the Bridge's
//! SFU pool following reservations, policy violations, and 200 Meetings converging to zero
//! writes.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::operator::{Operator, http_get};
use common::{cluster, create_tls_secret, label_bridge, secret_strings as links, wait_ready};
use conclave::api::{Bridge, Meeting};
use conclave::engine::jitsi::token;
use conclave::meeting::schedule;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// A Ready Bridge `meet` in `ns` (TURN off, SFU pool 1..=max with `per` participants each).
async fn ready_bridge(client: &kube::Client, ns: &str, port: i32, max: i32, per: i32) -> Api<Bridge> {
    create_tls_secret(client, ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "meet"},
        "spec": {"domain": "meet.example.com", "tls": {"secretName": "byo-tls"}, "turn": {"enabled": false},
                 "sfu": {"replicas": 1, "maxReplicas": max, "participantsPerReplica": per,
                         "reservationLeadTime": "15m", "media": {"port": port}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    wait_ready(&bridges, "meet").await;
    bridges
}

fn meeting(name: &str, spec: serde_json::Value) -> Meeting {
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("meeting")
}

fn phase(m: &Meeting) -> Option<String> {
    m.status.as_ref()?.phase.map(|p| format!("{p:?}"))
}

async fn wait_phase(meetings: &Api<Meeting>, name: &str, want: &str) -> Meeting {
    wait_for(&format!("Meeting {name} {want}"), Duration::from_secs(60), || {
        let meetings = meetings.clone();
        let want = want.to_string();
        let name = name.to_string();
        async move {
            let m = meetings.get(&name).await.ok()?;
            (phase(&m).as_deref() == Some(want.as_str())).then_some(m)
        }
    })
    .await
}

async fn app_secret(secrets: &Api<Secret>) -> Vec<u8> {
    let s = secrets.get("meet-secrets").await.expect("generated Secret");
    s.data.expect("data")["jwt-app-secret"].0.clone()
}

/// Changes the operator's clock, then nudges the Bridge (and through it every Meeting on it)
/// so the new time is looked at now rather than at the requeue computed from the old time.
async fn advance(operator: &Operator, bridges: &Api<Bridge>, to: DateTime<Utc>) {
    operator.set_now(to);
    label_bridge(bridges, "meet", "tick", &to.timestamp().to_string()).await;
}

async fn sfu_replicas(statefulsets: &Api<StatefulSet>) -> usize {
    statefulsets
        .list(&ListParams::default().labels("app.kubernetes.io/component=sfu"))
        .await
        .expect("statefulsets")
        .items
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .count()
}

async fn wait_sfu(statefulsets: &Api<StatefulSet>, bridges: &Api<Bridge>, n: usize) {
    wait_for(&format!("{n} SFU replicas"), Duration::from_secs(60), || {
        let (statefulsets, bridges) = (statefulsets.clone(), bridges.clone());
        async move {
            let status = bridges.get("meet").await.ok()?.status?.sfu?;
            (sfu_replicas(&statefulsets).await == n && status.replicas as usize == n).then_some(())
        }
    })
    .await;
}

/// Waits until the rooms ConfigMap's limits file reads `want`.
async fn wait_limits(configmaps: &Api<ConfigMap>, want: &str) {
    wait_for(&format!("room limits {want:?}"), Duration::from_secs(60), || {
        let configmaps = configmaps.clone();
        let want = want.to_string();
        async move {
            let cm = configmaps.get_opt("meet-rooms").await.ok().flatten()?;
            (cm.data?.get("limits")? == &want).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn meeting_lifecycle() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "meeting").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Utc::now();
    let operator = Operator::with_clock("conclave-meeting-test", &ns, dir.path(), t0);
    let bridges = ready_bridge(&client, &ns, 31300, 3, 10).await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);

    let start = t0 + chrono::Duration::hours(1);
    let end = t0 + chrono::Duration::hours(2);
    meetings
        .create(
            &PostParams::default(),
            &meeting(
                "standup",
                json!({
                    "bridge": "meet", "start": start, "end": end, "maxParticipants": 25,
                    "participants": [
                        {"name": "alice", "displayName": "Alice Liddell", "email": "alice@example.com", "moderator": true},
                        {"name": "bob"}
                    ],
                    "guests": {"allowed": true, "lobby": true}
                }),
            ),
        )
        .await
        .expect("meeting");
    meetings
        .create(
            &PostParams::default(),
            &meeting("retro", json!({"bridge": "meet", "participants": [{"name": "carol"}]})),
        )
        .await
        .expect("standing meeting");

    // Scheduled: links exist ahead of time, tokens scoped to the room and the schedule.
    let m = wait_phase(&meetings, "standup", "Scheduled").await;
    let status = m.status.clone().expect("status");
    assert_eq!(status.url.as_deref(), Some("https://meet.example.com/standup"));
    assert_eq!(status.credentials_secret.as_deref(), Some("standup-credentials"));
    let capacity = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CapacityReserved")
        .expect("capacity condition");
    assert_eq!((&*capacity.status, &*capacity.reason), ("True", "Planned"));
    // Required E2EE: 25 places reach Jitsi's E2EE room limit; carol alone stays below it.
    let e2ee = |m: &Meeting| {
        m.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "E2EEAvailable").cloned())
            .map(|c| (c.status, c.reason))
    };
    assert_eq!(e2ee(&m), Some(("False".into(), "AboveE2EELimit".into())));
    let retro = wait_phase(&meetings, "retro", "Open").await;
    assert_eq!(e2ee(&retro), Some(("True".into(), "WithinE2EELimit".into())));
    let key = app_secret(&secrets).await;
    let creds = secrets.get("standup-credentials").await.expect("credentials");
    let owner = &creds.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Meeting", "standup"));
    let l = links(&creds);
    assert_eq!(l.keys().collect::<Vec<_>>(), vec!["alice", "bob", "guest"]);
    let claims = |link: &str| {
        let (url, jwt) = link.split_once("?jwt=").expect("link carries a token");
        assert_eq!(url, "https://meet.example.com/standup");
        // Verification checks nbf against the real clock; the token is for an hour from now.
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_issuer(&["conclave"]);
        v.set_audience(&["conclave"]);
        v.validate_nbf = false;
        v.validate_exp = false;
        jsonwebtoken::decode::<token::Claims>(jwt, &jsonwebtoken::DecodingKey::from_secret(&key), &v)
            .expect("signed with the Bridge's app secret")
            .claims
    };
    let alice = claims(&l["alice"]);
    assert_eq!(alice.room, "standup");
    assert_eq!(alice.context.user.name, "Alice Liddell");
    assert_eq!(alice.context.user.email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        (
            alice.context.user.affiliation.as_str(),
            alice.context.user.moderator.as_str()
        ),
        ("owner", "true")
    );
    assert_eq!(alice.nbf, (start - chrono::Duration::minutes(10)).timestamp());
    assert_eq!(alice.exp, (end + chrono::Duration::minutes(15)).timestamp());
    let bob = claims(&l["bob"]);
    assert_eq!(
        (bob.context.user.moderator.as_str(), bob.context.user.lobby),
        ("false", None)
    );
    assert_eq!(claims(&l["guest"]).context.user.lobby, Some(true));

    // The standing room is open at once; its token is for its own room only, valid now.
    let retro = wait_phase(&meetings, "retro", "Open").await;
    let retro_links = links(&secrets.get("retro-credentials").await.expect("retro credentials"));
    let (url, jwt) = retro_links["carol"].split_once("?jwt=").expect("token");
    assert_eq!(url, "https://meet.example.com/retro");
    let carol = token::verify(jwt, &key).expect("valid now");
    assert_eq!(carol.room, "retro");
    assert!(!retro_links.values().any(|l| l.contains("/standup")));
    assert!(carol.exp - carol.nbf <= 24 * 3600 + 60, "standing tokens are bounded");
    assert_eq!(
        retro.status.and_then(|s| s.credentials_secret).as_deref(),
        Some("retro-credentials")
    );

    // Prosody gets the room's occupancy limit through the Bridge's rooms ConfigMap.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    wait_limits(&configmaps, "standup=25\n").await;

    // Before the lead time the pool is at its minimum.
    wait_sfu(&statefulsets, &bridges, 1).await;

    // 15 minutes before the start the pool grows for 25 + 1 participants (10 each): 3, the max.
    advance(&operator, &bridges, start - chrono::Duration::minutes(14)).await;
    wait_sfu(&statefulsets, &bridges, 3).await;
    let b = bridges.get("meet").await.expect("bridge");
    let sfu = b.status.and_then(|s| s.sfu).expect("sfu status");
    assert_eq!(sfu.reserved_participants, 25 + 1);
    assert_eq!(sfu.available_participants, 4);
    // Still Scheduled (links open 10 minutes before the start).
    assert_eq!(
        phase(&meetings.get("standup").await.expect("m")).as_deref(),
        Some("Scheduled")
    );

    // Open at start - 10 minutes.
    advance(&operator, &bridges, start - chrono::Duration::minutes(10)).await;
    wait_phase(&meetings, "standup", "Open").await;

    // Participant edits change the links: bob goes, dave comes; alice's link is unchanged.
    meetings
        .patch(
            "standup",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"participants": [
                {"name": "alice", "displayName": "Alice Liddell", "email": "alice@example.com", "moderator": true},
                {"name": "dave"}
            ]}})),
        )
        .await
        .expect("edit participants");
    let edited = wait_for("links follow the participants", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        async move {
            let l = links(&secrets.get("standup-credentials").await.ok()?);
            (l.contains_key("dave") && !l.contains_key("bob")).then_some(l)
        }
    })
    .await;
    assert_eq!(edited["alice"], l["alice"], "unchanged participants keep their link");

    // A Meeting weaker than its Bridge is Invalid with the reason, and gets no links.
    meetings
        .create(
            &PostParams::default(),
            &meeting(
                "weak",
                json!({"bridge": "meet", "e2ee": "Preferred", "participants": [{"name": "eve"}]}),
            ),
        )
        .await
        .expect("weak meeting");
    let weak = wait_phase(&meetings, "weak", "Invalid").await;
    let ready = weak
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "E2EEWeakerThanBridge");
    assert!(ready.message.starts_with("spec.e2ee"), "{}", ready.message);
    assert!(secrets.get_opt("weak-credentials").await.expect("get").is_none());

    // A Meeting on a missing Bridge is Pending with the reason.
    meetings
        .create(
            &PostParams::default(),
            &meeting("orphan", json!({"bridge": "nope", "participants": [{"name": "x"}]})),
        )
        .await
        .expect("orphan meeting");
    let orphan = wait_phase(&meetings, "orphan", "Pending").await;
    assert!(
        orphan
            .status
            .expect("status")
            .conditions
            .iter()
            .any(|c| c.reason == "BridgeNotFound"),
        "reason BridgeNotFound"
    );

    // Ended at `end`: links are removed and the pool drains back to its minimum.
    advance(&operator, &bridges, end).await;
    let ended = wait_phase(&meetings, "standup", "Ended").await;
    assert_eq!(ended.status.and_then(|s| s.credentials_secret), None);
    wait_for("credentials removed", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("standup-credentials")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    wait_sfu(&statefulsets, &bridges, 1).await;
    wait_limits(&configmaps, "").await;

    // Deleting a Meeting removes its Secret (garbage collection through the owner reference).
    meetings
        .delete("retro", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("retro credentials collected", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("retro-credentials").await.ok()?.is_none().then_some(()) }
    })
    .await;

    // Privacy: no participant name, email or token in the operator's log.
    let log = operator.log().join("\n");
    for secret in [
        "Alice Liddell",
        "alice@example.com",
        "dave",
        "carol",
        &l["alice"][40..80],
    ] {
        assert!(!log.contains(secret), "the log mentions {secret:?}");
    }
}

/// With the system clock and nothing touching it, a Meeting opens and ends at its times: each
/// Meeting's next transition waits on the operator's timer, which brings the Meeting back when
/// it is due (no polling, no nudge from the test).
#[tokio::test]
async fn a_meeting_opens_and_ends_on_time_by_itself() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "on-time").await;
    let _operator = Operator::start("conclave-on-time-test", &ns);
    let _bridges = ready_bridge(&client, &ns, 31450, 1, 10).await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let now = Utc::now();
    let seconds = chrono::Duration::seconds;
    // The join window opens EARLY_JOIN before the start, in a few seconds; the other Meeting
    // runs already and ends in a few seconds.
    let opens = now + seconds(6);
    let ends = now + seconds(8);
    for (name, start, end) in [
        (
            "opens",
            opens + schedule::EARLY_JOIN,
            opens + schedule::EARLY_JOIN + chrono::Duration::hours(1),
        ),
        ("ends", now - chrono::Duration::hours(1), ends),
    ] {
        let spec = json!({"bridge": "meet", "start": start, "end": end, "participants": [{"name": "alice"}]});
        meetings
            .create(&PostParams::default(), &meeting(name, spec))
            .await
            .expect("meeting");
    }
    let open = wait_phase(&meetings, "opens", "Open").await;
    assert!(Utc::now() >= opens, "not open before its window");
    assert!(
        open.status.and_then(|s| s.credentials_secret).is_some(),
        "links once open"
    );
    let ended = wait_phase(&meetings, "ends", "Ended").await;
    assert!(Utc::now() >= ends);
    assert_eq!(ended.status.and_then(|s| s.credentials_secret), None, "links withdrawn");
}

/// Removed means removed: the credentials Secret holds exactly the links of the current
/// participants (a removed participant's link and a key added by hand disappear at the next
/// reconcile), and a Secret deleted by hand comes back with byte-identical links while the
/// Bridge is not Ready, without the Meeting falling back to Pending.
#[tokio::test]
async fn links_follow_participants_and_come_back_identical() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "links").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Utc::now();
    let operator = Operator::with_clock("conclave-links-test", &ns, dir.path(), t0);
    let bridges = ready_bridge(&client, &ns, 31350, 1, 10).await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let people = |names: &[&str]| names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
    meetings
        .create(
            &PostParams::default(),
            &meeting(
                "lounge",
                json!({"bridge": "meet", "participants": people(&["alice", "bob", "carol"]),
                       "guests": {"allowed": true}}),
            ),
        )
        .await
        .expect("standing meeting");
    wait_phase(&meetings, "lounge", "Open").await;
    let first = links(&secrets.get("lounge-credentials").await.expect("credentials"));
    assert_eq!(first.keys().collect::<Vec<_>>(), vec!["alice", "bob", "carol", "guest"]);

    // Bob is removed: once the Meeting's new generation is observed, his link is gone.
    meetings
        .patch(
            "lounge",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"participants": people(&["alice", "carol"])}})),
        )
        .await
        .expect("remove bob");
    wait_for("the new generation observed", Duration::from_secs(60), || async {
        let m = meetings.get("lounge").await.ok()?;
        (m.status?.observed_generation == m.metadata.generation).then_some(())
    })
    .await;
    let now = links(&secrets.get("lounge-credentials").await.expect("credentials"));
    assert_eq!(now.keys().collect::<Vec<_>>(), vec!["alice", "carol", "guest"]);
    for k in ["alice", "carol", "guest"] {
        assert_eq!(now[k], first[k], "{k}'s link is unchanged");
    }

    // A key added by hand is not the operator's to keep either.
    secrets
        .patch(
            "lounge-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"mallory": "https://meet.example.com/lounge"}})),
        )
        .await
        .expect("add a key by hand");
    wait_for("the hand-added key removed", Duration::from_secs(30), || async {
        let l = links(&secrets.get("lounge-credentials").await.ok()?);
        (l == now).then_some(())
    })
    .await;

    // An hour later the Bridge stops being Ready (its TLS Secret is gone), then the credentials
    // Secret is deleted by hand: it comes back with the very same links (not links for a
    // window starting now), and the Meeting stays Open.
    operator.set_now(t0 + chrono::Duration::hours(1));
    secrets
        .delete("byo-tls", &DeleteParams::default())
        .await
        .expect("delete the TLS Secret");
    common::wait_condition(&bridges, "meet", "Ready", "False", "NotReady").await;
    let old_uid = secrets
        .get("lounge-credentials")
        .await
        .expect("credentials")
        .metadata
        .uid;
    secrets
        .delete("lounge-credentials", &DeleteParams::default())
        .await
        .expect("delete the credentials by hand");
    let back = wait_for("the credentials back", Duration::from_secs(60), || async {
        let s = secrets.get_opt("lounge-credentials").await.ok()??;
        (s.metadata.uid != old_uid).then_some(s)
    })
    .await;
    assert_eq!(links(&back), now, "byte-identical links");
    let m = meetings.get("lounge").await.expect("meeting");
    let status = m.status.expect("status");
    assert_eq!(status.phase, Some(conclave::api::meeting::Phase::Open));
    assert_eq!(status.credentials_secret.as_deref(), Some("lounge-credentials"));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!((&*ready.status, &*ready.reason), ("False", "BridgeNotReady"));
    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    wait_ready(&bridges, "meet").await;
}

/// 200 Meetings on one Bridge converge, and a change that touches all of them (their Bridge's
/// labels) then costs zero writes.
#[tokio::test]
async fn two_hundred_meetings_converge_to_zero_writes() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "many").await;
    let operator = Operator::start("conclave-many-test", &ns);
    let bridges = ready_bridge(&client, &ns, 31400, 5, 100).await;
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let start = Utc::now() + chrono::Duration::days(30);
    for i in 0..200 {
        let at = start + chrono::Duration::hours(i);
        meetings
            .create(
                &PostParams::default(),
                &meeting(
                    &format!("m{i:03}"),
                    json!({"bridge": "meet", "start": at, "end": at + chrono::Duration::minutes(30),
                           "participants": [{"name": "a", "moderator": true}, {"name": "b"}]}),
                ),
            )
            .await
            .expect("meeting");
    }
    wait_for("200 Meetings Scheduled with links", Duration::from_secs(180), || {
        let meetings = meetings.clone();
        async move {
            let all = meetings.list(&ListParams::default()).await.ok()?.items;
            let done = all
                .iter()
                .filter(|m| {
                    phase(m).as_deref() == Some("Scheduled")
                        && m.status.as_ref().and_then(|s| s.credentials_secret.as_ref()).is_some()
                })
                .count();
            (done == 200).then_some(())
        }
    })
    .await;
    // Each Meeting is reconciled when it is created and again when its credentials Secret
    // reaches the cache; its own status write triggers nothing. Once every Meeting has had both,
    // every write they lead to (status, Secret, Event) is done: reconciles of one object never
    // overlap.
    wait_for(
        "every Meeting reconciled after its Secret arrived",
        Duration::from_secs(120),
        || {
            let done = (0..200)
                .filter(|i| operator.log_count(&["reconciled", &format!("/m{i:03}}}")]) >= 2)
                .count();
            async move { (done == 200).then_some(()) }
        },
    )
    .await;
    // The metrics count them by phase.
    let port = operator.http_port().await;
    wait_for(
        "200 Scheduled Meetings in /metrics",
        Duration::from_secs(30),
        || async {
            let (_, body) = http_get(port, "/metrics").ok()?;
            body.lines()
                .any(|l| l == "conclave_meetings{phase=\"Scheduled\"} 200")
                .then_some(())
        },
    )
    .await;
    let writes_before = operator.writes().len();
    let reconciles = operator.log_count(&["reconciled", "meeting="]);
    label_bridge(&bridges, "meet", "touched", "yes").await;
    wait_for("every Meeting reconciled again", Duration::from_secs(120), || {
        let n = operator.log_count(&["reconciled", "meeting="]);
        async move { (n >= reconciles + 200).then_some(()) }
    })
    .await;
    let writes = operator.writes();
    assert_eq!(
        writes[writes_before..].to_vec(),
        Vec::<String>::new(),
        "200 converged Meetings cost zero writes"
    );
}
