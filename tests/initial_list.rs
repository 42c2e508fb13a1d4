//! How the operator's watches get their initial lists (`--initial-list`, default `auto`):
//! streamed where the API server serves streaming watches, paged lists where it does not. A
//! cluster can turn Kubernetes' `WatchList` gate off; its API server then refuses every
//! streaming watch, and an operator that streamed regardless would never become ready.

mod common;

use std::path::Path;
use std::time::Duration;

use common::operator::Operator;
use common::{cluster, install_crds};
use conclave::api::Meeting;
use kube::api::{Api, PostParams};
use testenv::{ControlPlane, Options, wait_for};

/// A Meeting naming a Bridge that does not exist: its status shows the watches deliver.
async fn meeting_is_reconciled(client: &kube::Client, ns: &str) {
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), ns);
    let m: Meeting = serde_json::from_value(serde_json::json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": "m"}, "spec": {"bridge": "nowhere", "participants": [{"name": "a"}]}
    }))
    .expect("meeting");
    meetings.create(&PostParams::default(), &m).await.expect("create");
    wait_for("the Meeting reconciled", Duration::from_secs(60), || {
        let meetings = meetings.clone();
        async move {
            let m = meetings.get("m").await.ok()?;
            m.status?.phase.map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
async fn auto_uses_paged_lists_where_the_api_server_refuses_streaming() {
    let cp = ControlPlane::start(Options {
        kwok: false,
        feature_gates: vec!["WatchList=false".into()],
        ..Options::default()
    })
    .expect("control plane");
    install_crds(&cp);
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "paged").await;
    let user = "conclave-paged-test";
    let kubeconfig = cp.kubeconfig_as(user, &["system:masters"]);
    let bin = Path::new(env!("CARGO_BIN_EXE_conclave"));
    let operator = Operator::quiet(bin, user, &kubeconfig, &[], &[]);
    let port = operator.http_port().await;
    operator.wait_ready(port).await;
    assert_eq!(
        operator.log_count(&["initial lists", "streaming=false"]),
        1,
        "{:?}",
        operator.lines_containing("initial lists")
    );
    assert!(
        !operator.lines_containing("refuses streaming").is_empty(),
        "the refusal is logged"
    );
    meeting_is_reconciled(&client, &ns).await;
}

#[tokio::test]
async fn auto_streams_where_the_api_server_serves_it() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "streaming").await;
    let operator = Operator::start("conclave-streaming-test", &ns);
    let port = operator.http_port().await;
    operator.wait_ready(port).await;
    assert_eq!(
        operator.log_count(&["initial lists", "streaming=true"]),
        1,
        "{:?}",
        operator.lines_containing("initial lists")
    );
    meeting_is_reconciled(&client, &ns).await;
}
