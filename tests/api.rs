//! The Bridge and Meeting APIs against a real kube-apiserver: CRDs install, defaults apply,
//! examples are accepted, and bad input is refused at admission naming the field.

mod common;

use common::{cluster, kubectl, kubectl_ok, yaml_files};
use conclave::api::{Bridge, Meeting};
use kube::api::{Api, Patch, PatchParams, PostParams};

#[tokio::test]
async fn crds_are_established_and_explained() {
    let cp = cluster();
    let explained = kubectl_ok(cp, &["explain", "bridge.spec.turn"]);
    assert!(
        explained.contains("TURN servers (coturn)"),
        "explain shows the field description:\n{explained}"
    );
    assert!(
        explained.contains("deniedPeerCIDRs"),
        "explain lists the subfields:\n{explained}"
    );
    let explained = kubectl_ok(cp, &["explain", "meeting.spec.participants.moderator"]);
    assert!(explained.contains("Moderators can mute"), "{explained}");
    let resources = kubectl_ok(cp, &["api-resources", "--api-group=conclave.dev", "-o", "name"]);
    assert!(
        resources.contains("bridges.conclave.dev") && resources.contains("meetings.conclave.dev"),
        "{resources}"
    );
    let short = kubectl_ok(cp, &["api-resources", "--api-group=conclave.dev"]);
    assert!(
        short.contains(" br ") && short.contains(" mtg "),
        "short names are served:\n{short}"
    );
}

#[tokio::test]
async fn examples_are_accepted_and_defaults_applied() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "examples").await;
    for file in yaml_files("examples") {
        kubectl_ok(
            cp,
            &["apply", "--server-side", "-n", &ns, "-f", &file.to_string_lossy()],
        );
    }
    let listed = kubectl_ok(cp, &["get", "br,mtg", "-n", &ns, "-o", "name"]);
    for name in [
        "bridge.conclave.dev/meet",
        "bridge.conclave.dev/conference",
        "meeting.conclave.dev/weekly-sync",
        "meeting.conclave.dev/team-room",
        "bridge.conclave.dev/live",
        "meeting.conclave.dev/design-review",
    ] {
        assert!(listed.contains(name), "{name} exists:\n{listed}");
    }

    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let meet = bridges.get("meet").await.expect("Bridge meet");
    // The API server filled in the schema defaults; the Rust defaults must agree with them.
    let turn = &meet.spec.turn;
    assert!(turn.enabled);
    assert_eq!(
        (turn.port, turn.tls_port, turn.credential_ttl.as_str()),
        (3478, 5349, "1h")
    );
    assert_eq!(
        turn.denied_peer_cidrs,
        conclave::api::bridge::DEFAULT_DENIED_PEER_CIDRS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(meet.spec.sfu.replicas, 1);
    assert_eq!(meet.spec.sfu.participants_per_replica, 100);
    assert_eq!(meet.spec.e2ee, conclave::api::E2eePolicy::Required);
    let rust_defaults: conclave::api::BridgeSpec =
        serde_json::from_value(serde_json::json!({"domain": "meet.example.com"})).expect("spec from defaults");
    assert_eq!(meet.spec, rust_defaults, "schema defaults and Rust defaults agree");

    let meetings: Api<Meeting> = Api::namespaced(client, &ns);
    let sync = meetings.get("weekly-sync").await.expect("Meeting weekly-sync");
    assert_eq!(sync.spec.participants.len(), 3);
    assert!(sync.spec.participants[0].moderator);
    assert!(!sync.spec.participants[1].moderator, "moderator defaults to false");
    let standing = meetings.get("team-room").await.expect("Meeting team-room");
    assert!(
        !standing.spec.guests.allowed && standing.spec.guests.lobby,
        "guest defaults"
    );
}

/// Each file in tests/invalid/ names, in its `# expect:` header, text the API server's refusal
/// must contain: the field at fault and, for CEL rules, our message.
#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "invalid").await;
    let files = yaml_files("tests/invalid");
    assert!(
        files.len() >= 25,
        "the corpus has at least 25 cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` header", file.display()))
            .to_string();
        let out = kubectl(
            cp,
            &["create", "--dry-run=server", "-n", &ns, "-f", &file.to_string_lossy()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!(
                "{}: accepted, expected refusal naming {expect:?}",
                file.display()
            ));
        } else if !stderr.contains(&expect) {
            failures.push(format!("{}: refused without {expect:?}: {stderr}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn identity_fields_are_immutable() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "immutable").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(serde_json::json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "meet"}, "spec": {"domain": "meet.example.com"}
    }))
    .expect("valid Bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("created");
    let err = bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"domain": "other.example.com"}})),
        )
        .await
        .expect_err("domain change is refused");
    assert!(err.to_string().contains("spec.domain is immutable"), "{err}");
    let err = bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"engine": "LiveKit"}})),
        )
        .await
        .expect_err("engine change is refused");
    assert!(err.to_string().contains("spec.engine is immutable"), "{err}");
    // Other fields stay mutable.
    bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"sfu": {"replicas": 2, "maxReplicas": 3}}})),
        )
        .await
        .expect("sfu is mutable");

    let meetings: Api<Meeting> = Api::namespaced(client, &ns);
    let meeting: Meeting = serde_json::from_value(serde_json::json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": "standup"}, "spec": {"bridge": "meet"}
    }))
    .expect("valid Meeting");
    meetings
        .create(&PostParams::default(), &meeting)
        .await
        .expect("created");
    let err = meetings
        .patch(
            "standup",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"bridge": "other"}})),
        )
        .await
        .expect_err("bridge change is refused");
    assert!(err.to_string().contains("spec.bridge is immutable"), "{err}");
}
