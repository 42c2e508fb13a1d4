//! Tests against the shared control plane: the whole chain works (API server, RBAC, audit,
//! controller-manager, scheduler, kwok), and the helpers do what they promise.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn reports_the_pinned_kubernetes_version() {
    let client = testenv::shared().client().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, "v1.37.2");
}

#[tokio::test]
async fn namespace_helper_creates_labelled_namespace_with_default_service_account() {
    let client = testenv::shared().client().await;
    let name = testenv::namespace(&client, "helper").await;
    assert!(name.starts_with("helper-") && name.len() > "helper-".len(), "{name}");
    let ns = Api::<Namespace>::all(client.clone()).get(&name).await.unwrap();
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("conclave.dev/test").map(String::as_str), Some("true"));
    // The helper promised the ServiceAccount exists on return (no waiting here).
    let sa = Api::<ServiceAccount>::namespaced(client, &name)
        .get_opt("default")
        .await
        .unwrap();
    assert!(sa.is_some());
}

#[tokio::test]
async fn deployment_pods_become_ready_on_fake_nodes() {
    let client = testenv::shared().client().await;
    let ns = testenv::namespace(&client, "deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // Never pulled: kwok only pretends to run containers.
                "spec": { "containers": [{ "name": "web", "image": "example.invalid/web:1" }] },
            },
        },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();

    // deployment controller -> ReplicaSet -> replicaset controller -> Pods -> scheduler ->
    // kwok marks them Running/Ready -> status propagates back to the Deployment.
    testenv::wait_for("deployment web to have 3 ready replicas", TIMEOUT, || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.ready_replicas? == 3).then_some(())
    })
    .await;

    let pods = Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 3);
    for pod in pods.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "scheduled to {node:?}");
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        // kwok reports the node's InternalIP as the pod's hostIP.
        let host_ip = status.host_ip.unwrap_or_default();
        assert!(host_ip.starts_with("10.244.0."), "hostIP {host_ip}");
    }
}

#[tokio::test]
async fn fake_nodes_keep_their_external_ip() {
    let client = testenv::shared().client().await;
    let nodes = Api::<Node>::all(client).list(&ListParams::default()).await.unwrap();
    assert_eq!(nodes.items.len(), 3);
    for node in nodes.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = node.status.unwrap();
        // Ready means kwok's node-initialize stage has already patched the status.
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "{name} not Ready");
        let addrs = status.addresses.unwrap_or_default();
        let of = |t: &str| addrs.iter().find(|a| a.type_ == t).map(|a| a.address.clone());
        assert!(
            of("ExternalIP").is_some_and(|a| a.starts_with("203.0.113.")),
            "{name}: {addrs:?}"
        );
        assert!(
            of("InternalIP").is_some_and(|a| a.starts_with("10.244.0.")),
            "{name}: {addrs:?}"
        );
    }
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_deleted_owner() {
    let client = testenv::shared().client().await;
    let ns = testenv::namespace(&client, "gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let owner: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap();
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "owner",
                "uid": owner.metadata.uid.unwrap(),
            }],
        },
    }))
    .unwrap();
    cms.create(&PostParams::default(), &dependent).await.unwrap();

    // Background deletion of the owner: only kube-controller-manager's garbage collector
    // removes the dependent (the API server alone would leave it forever).
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    testenv::wait_for("the garbage collector to delete the dependent", TIMEOUT, || async {
        matches!(cms.get_opt("dependent").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rbac_forbids_an_unprivileged_user() {
    let cp = testenv::shared();
    let someone = cp.client_as("someone", &[]).await;
    let err = Api::<Secret>::all(someone)
        .list(&ListParams::default())
        .await
        .expect_err("an unbound user must not list secrets");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // The admin can, so the 403 is authorization and not a broken connection.
    Api::<Secret>::all(cp.client().await)
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn client_as_presents_the_requested_user_and_all_groups() {
    let client = testenv::shared()
        .client_as("alice", &["team-a", "team-b", "team-c"])
        .await;
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice"));
    let groups = user.groups.unwrap_or_default();
    for g in ["team-a", "team-b", "team-c", "system:authenticated"] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
}

#[tokio::test]
async fn audit_log_records_namespace_creation_by_admin() {
    let cp = testenv::shared();
    let client = cp.client().await;
    // An explicit name (not generateName) so the event's objectRef names it.
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "audit-probe" } })).unwrap();
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let is_our_create = |e: &serde_json::Value| {
        e["verb"] == "create"
            && e["user"]["username"] == "admin"
            && e["objectRef"]["resource"] == "namespaces"
            && e["objectRef"]["name"] == "audit-probe"
            && e["responseStatus"]["code"] == 201
    };
    // Blocking audit mode writes the event while serving the request; the short deadline
    // checks that events really appear promptly.
    testenv::wait_for(
        "the namespace create in the audit log",
        Duration::from_secs(2),
        || async { cp.audit_events().iter().any(is_our_create).then_some(()) },
    )
    .await;
    let events = cp.audit_events();
    // Exactly one event per request (the RequestReceived stage is omitted), so counting
    // writes is exact.
    assert_eq!(events.iter().filter(|e| is_our_create(e)).count(), 1);
    assert!(events.iter().all(|e| e["stage"] != "RequestReceived"));
}

#[test]
fn kubectl_and_helm_talk_to_the_cluster() {
    let cp = testenv::shared();
    let out = cp
        .kubectl()
        .args(["get", "namespace", "default", "-o", "name"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default");

    let out = cp.helm().args(["list", "--all-namespaces", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(cp.bin("etcd").is_file());
    assert!(cp.bin("cert-manager-crds").is_dir());
    assert!(testenv::tools_bin_dir().unwrap().join("kwok").is_file());
}

#[tokio::test]
#[should_panic(expected = "timed out after 300ms waiting for something that never happens")]
async fn wait_for_panics_with_the_description_on_timeout() {
    testenv::wait_for("something that never happens", Duration::from_millis(300), || async {
        None::<()>
    })
    .await;
}
