//! Objects that do not match the operator's schema (written under an older one, or with
//! validation off) are reported and skipped; everything else reconciles and the operator
//! becomes ready. Written for real: the test adds a schema-less second version to the CRDs
//! (served, not stored, no conversion), so an object written through it is stored as
//! `v1alpha1` without `v1alpha1`'s validation, exactly as an object from an older schema is.
//!
//! Its own test binary: it changes the CRDs of its control plane.

mod common;

use std::time::Duration;

use common::operator::{Operator, http_get};
use common::{cluster, create_tls_secret, kubectl_ok, wait_ready};
use conclave::api::{Bridge, Meeting};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

/// Adds version `v1alpha2` to CRD `crd`: served, not stored, and accepting anything.
fn add_open_version(crd: &str) {
    let version = json!([{"op": "add", "path": "/spec/versions/-", "value": {
        "name": "v1alpha2", "served": true, "storage": false,
        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
    }}]);
    kubectl_ok(
        cluster(),
        &["patch", "crd", crd, "--type=json", "-p", &version.to_string()],
    );
}

fn open_version(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "conclave.dev".into(),
        version: "v1alpha2".into(),
        api_version: "conclave.dev/v1alpha2".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Writes `object` through the schema-less version, waiting until the API serves it.
async fn write_unchecked(api: &Api<DynamicObject>, object: serde_json::Value) {
    let obj: DynamicObject = serde_json::from_value(object).expect("object");
    let name = obj.metadata.name.clone().expect("name");
    wait_for(
        &format!("writing {name} through v1alpha2"),
        Duration::from_secs(60),
        || async {
            let pp = PatchParams::apply("test").force();
            api.patch(&name, &pp, &Patch::Apply(&obj)).await.ok().map(|_| ())
        },
    )
    .await;
}

fn metric(port: u16, line_prefix: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
}

async fn wait_invalid(port: u16, kind: &str, want: f64) {
    let prefix = format!("conclave_invalid_objects{{kind=\"{kind}\"}} ");
    wait_for(
        &format!("conclave_invalid_objects{{kind={kind}}} = {want}"),
        Duration::from_secs(60),
        || async { (metric(port, &prefix) == Some(want)).then_some(()) },
    )
    .await;
}

async fn wait_links(meetings: &Api<Meeting>, name: &str) {
    wait_for(
        &format!("Meeting {name} with links"),
        Duration::from_secs(90),
        || async {
            let m = meetings.get(name).await.ok()?;
            m.status?.credentials_secret.map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn objects_that_do_not_deserialize_are_reported_and_skipped() {
    let cp = cluster();
    let client = cp.client().await;
    add_open_version("meetings.conclave.dev");
    add_open_version("bridges.conclave.dev");
    let ns = testenv::namespace(&client, "invalid").await;
    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let open_meetings: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &open_version("Meeting", "meetings"));
    let open_bridges: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &open_version("Bridge", "bridges"));

    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "meet"},
        "spec": {"domain": "meet.example.com", "tls": {"secretName": "byo-tls"}, "turn": {"enabled": false},
                 "sfu": {"media": {"port": 31700}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    // A Bridge and a Meeting whose specs the operator's types cannot read, in place before
    // the operator starts, so its very first lists contain them.
    write_unchecked(
        &open_bridges,
        json!({"apiVersion": "conclave.dev/v1alpha2", "kind": "Bridge", "metadata": {"name": "broken"},
               "spec": {"domain": "broken.example.com", "sfu": "big"}}),
    )
    .await;
    write_unchecked(
        &open_meetings,
        json!({"apiVersion": "conclave.dev/v1alpha2", "kind": "Meeting", "metadata": {"name": "broken"},
               "spec": {"bridge": "meet", "participants": "alice-private,bob-private"}}),
    )
    .await;
    let fine: Meeting = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting", "metadata": {"name": "fine"},
        "spec": {"bridge": "meet", "participants": [{"name": "carol"}]}
    }))
    .expect("meeting");
    meetings.create(&PostParams::default(), &fine).await.expect("meeting");

    let operator = Operator::start("conclave-invalid-test", &ns);
    let port = operator.http_port().await;
    // Readiness is reached and the rest reconciles.
    operator.wait_ready(port).await;
    wait_ready(&bridges, "meet").await;
    wait_links(&meetings, "fine").await;
    wait_invalid(port, "Meeting", 1.0).await;
    wait_invalid(port, "Bridge", 1.0).await;

    // Each is reported on itself, with the offending field and without its values.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let notes = |kind: &'static str| {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("InvalidObject") && e.type_.as_deref() == Some("Warning"))
                .filter(|e| {
                    e.regarding
                        .as_ref()
                        .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some("broken"))
                })
                .find_map(|e| e.note)
        }
    };
    let note = wait_for(
        "an InvalidObject Event on Meeting broken",
        Duration::from_secs(30),
        || notes("Meeting"),
    )
    .await;
    assert!(note.contains("spec.participants"), "{note}");
    let bridge_note = wait_for(
        "an InvalidObject Event on Bridge broken",
        Duration::from_secs(30),
        || notes("Bridge"),
    )
    .await;
    assert!(bridge_note.contains("spec.sfu"), "{bridge_note}");
    for text in operator.log().iter().chain([&note]) {
        assert!(
            !text.contains("alice-private"),
            "a value of the bad object leaked: {text}"
        );
    }
    assert!(
        operator.log_count(&["does not match its schema", "broken"]) >= 2,
        "both are logged"
    );
    // Reported once per version, not on every relist or event.
    assert_eq!(
        operator.log_count(&["does not match its schema", "kind=\"Meeting\""]),
        1
    );

    // Fixed through the operator's own version, the Meeting is reconciled like any other.
    meetings
        .patch(
            "broken",
            &PatchParams::default(),
            // A merge patch: server-side apply cannot type the invalid live object.
            &Patch::Merge(json!({"spec": {"participants": [{"name": "dave"}]}})),
        )
        .await
        .expect("fix the Meeting");
    wait_links(&meetings, "broken").await;
    wait_invalid(port, "Meeting", 0.0).await;

    // A valid Meeting broken by hand leaves the cache: its stale spec is not acted on.
    // A merge patch: server-side apply (as `write_unchecked` does) fails to type the result.
    open_meetings
        .patch(
            "fine",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"participants": "carol-private"}})),
        )
        .await
        .expect("break Meeting fine through v1alpha2");
    wait_invalid(port, "Meeting", 1.0).await;
    // Deleted, it is no longer counted.
    open_meetings
        .delete("fine", &Default::default())
        .await
        .expect("delete the broken Meeting");
    wait_invalid(port, "Meeting", 0.0).await;
    assert_eq!(http_get(port, "/healthz").expect("healthz").0, 200);
}
