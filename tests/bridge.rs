//! The Bridge reconciler against the real control plane: the operator runs as a process (as
//! its own identity), children appear with their key settings, readiness flows into status,
//! drift is repaired, toggles prune, a converged Bridge costs zero writes, and deletion cascades.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child as Process, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster;
use conclave::api::Bridge;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

const OPERATOR_USER: &str = "conclave-operator-test";

/// The operator as a child process; killed on drop. Its log lines are collected for assertions.
struct Operator {
    process: Process,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    fn start() -> Operator {
        let cp = cluster();
        let kubeconfig = cp.kubeconfig_as(OPERATOR_USER, &["system:masters"]);
        let mut process = Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(["run", "--log-format", "text", "--http-address", "127.0.0.1:0"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,conclave=debug,kube=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("operator starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            process
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            process
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[operator] {line}");
                    lines.lock().expect("log lock").push(line);
                }
            });
        }
        Operator { process, lines }
    }

    fn log_count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn self_signed_tls(domain: &str) -> Secret {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![domain.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "byo-tls"},
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}
    }))
    .expect("secret")
}

fn writes_by_operator(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["user"]["username"] == OPERATOR_USER)
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

fn ready(b: &Bridge) -> bool {
    b.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn bridge_lifecycle() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "bridge").await;
    let operator = Operator::start();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &self_signed_tls("meet.example.com"))
        .await
        .expect("tls secret");
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "meet", "labels": {"argocd.argoproj.io/instance": "gitops-app"}},
        "spec": {"domain": "meet.example.com", "tls": {"secretName": "byo-tls"},
                 "sfu": {"replicas": 2, "media": {"exposure": "NodePort", "port": 31000}}}
    }))
    .expect("bridge");
    bridges
        .create(&PostParams::default(), &bridge)
        .await
        .expect("bridge created");

    // Children appear with the operator's labels and none of the parent's.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    for name in ["meet-prosody", "meet-jicofo", "meet-web", "meet-turn"] {
        let d = wait_for(&format!("Deployment {name}"), Duration::from_secs(60), || {
            let deployments = deployments.clone();
            async move { deployments.get_opt(name).await.ok().flatten() }
        })
        .await;
        let labels = d.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("conclave")
        );
        assert!(
            !labels.contains_key("argocd.argoproj.io/instance"),
            "GitOps labels are not copied onto {name}"
        );
        let owner = &d.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Bridge", "meet", Some(true))
        );
        let pod = d.spec.template.spec.clone().expect("pod spec");
        for c in &pod.containers {
            let sc = c.security_context.clone().expect("container securityContext");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}/{}", c.name);
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()]),
                "{name}/{}",
                c.name
            );
            assert!(
                c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some(),
                "{name}/{} has requests",
                c.name
            );
        }
    }
    // Per-replica SFU: own port, own NodePort Service, advertised address = the pinned node's ExternalIP.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for i in 0..2 {
        let name = format!("meet-sfu-{i}");
        let sts = wait_for(&format!("StatefulSet {name}"), Duration::from_secs(60), || {
            let statefulsets = statefulsets.clone();
            let name = name.clone();
            async move { statefulsets.get_opt(&name).await.ok().flatten() }
        })
        .await;
        let pod = sts.spec.template.spec.clone().expect("pod spec");
        let jvb = &pod.containers[0];
        let env = |k: &str| {
            jvb.env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == k)
                .and_then(|e| e.value)
        };
        assert_eq!(env("JVB_PORT"), Some((31000 + i).to_string()));
        let node = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|r| {
                r.node_selector_terms[0].match_expressions.clone().unwrap_or_default()[0]
                    .values
                    .clone()
                    .unwrap_or_default()[0]
                    .clone()
            })
            .expect("replica is pinned to a node");
        let node = nodes.get(&node).await.expect("pinned node exists");
        let external = node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "ExternalIP")
            .expect("ExternalIP")
            .address;
        assert_eq!(
            env("JVB_ADVERTISE_IPS"),
            Some(external),
            "replica {i} advertises its node's address"
        );
        let svc = services.get(&name).await.expect("per-replica Service");
        let port = &svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default()[0];
        assert_eq!(
            (port.protocol.as_deref(), port.port, port.node_port),
            (Some("UDP"), 31000 + i, Some(31000 + i))
        );
    }
    let turn_conf = configmaps
        .get("meet-turn")
        .await
        .expect("coturn ConfigMap")
        .data
        .unwrap_or_default();
    let conf = turn_conf.get("turnserver.conf").expect("turnserver.conf");
    for line in [
        "use-auth-secret",
        "realm=meet.example.com",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255",
        "no-multicast-peers",
    ] {
        assert!(conf.lines().any(|l| l == line), "coturn config has {line:?}");
    }
    assert!(
        !conf.contains("static-auth-secret"),
        "the TURN secret is not in the ConfigMap"
    );
    assert!(
        !policies
            .list(&ListParams::default())
            .await
            .expect("policies")
            .items
            .is_empty(),
        "NetworkPolicies exist"
    );

    // Readiness (kwok runs the pods) flows into status.
    let b = wait_for("Bridge Ready", Duration::from_secs(120), || {
        let bridges = bridges.clone();
        async move { bridges.get("meet").await.ok().filter(ready) }
    })
    .await;
    let status = b.status.expect("status");
    assert_eq!(status.url.as_deref(), Some("https://meet.example.com/"));
    let sfu = status.sfu.expect("sfu status");
    assert_eq!((sfu.replicas, sfu.ready_replicas, sfu.endpoints.len()), (2, 2, 2));
    assert!(
        status
            .turn_uris
            .iter()
            .any(|u| u.starts_with("turns:meet.example.com:5349")),
        "{:?}",
        status.turn_uris
    );

    // Converged: a change that alters no child (a label on the Bridge) is reconciled with zero writes.
    let before = operator.log_count("reconciled");
    let writes_before = writes_by_operator(&cp.audit_events()).len();
    bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .expect("label");
    wait_for("a reconcile after the label change", Duration::from_secs(30), || {
        let n = operator.log_count("reconciled");
        async move { (n > before).then_some(()) }
    })
    .await;
    let writes = writes_by_operator(&cp.audit_events());
    assert_eq!(
        writes[writes_before..].to_vec(),
        Vec::<String>::new(),
        "a converged Bridge costs zero writes"
    );

    // Drift: a deleted Service and a hand-edited Deployment are restored.
    services
        .delete("meet-prosody", &DeleteParams::default())
        .await
        .expect("delete service");
    deployments
        .patch(
            "meet-web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil:latest"}]}}}}),
            ),
        )
        .await
        .expect("edit");
    wait_for("prosody Service restored", Duration::from_secs(30), || {
        let services = services.clone();
        async move { services.get_opt("meet-prosody").await.ok().flatten() }
    })
    .await;
    wait_for("web image restored", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("meet-web").await.ok()?;
            let image = d
                .spec
                .template
                .spec?
                .containers
                .into_iter()
                .find(|c| c.name == "web")?
                .image?;
            (image != "evil:latest").then_some(())
        }
    })
    .await;

    // Toggle: TURN off removes every TURN object.
    bridges
        .patch(
            "meet",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"turn": {"enabled": false}}})),
        )
        .await
        .expect("turn off");
    wait_for("TURN objects pruned", Duration::from_secs(30), || {
        let (deployments, configmaps, services) = (deployments.clone(), configmaps.clone(), services.clone());
        async move {
            let gone = deployments.get_opt("meet-turn").await.ok()?.is_none()
                && configmaps.get_opt("meet-turn").await.ok()?.is_none()
                && services.get_opt("meet-turn").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;

    // Deletion cascades through the garbage collector.
    bridges
        .delete("meet", &DeleteParams::default())
        .await
        .expect("delete bridge");
    wait_for("children garbage-collected", Duration::from_secs(60), || {
        let (deployments, statefulsets) = (deployments.clone(), statefulsets.clone());
        async move {
            let left = deployments.list(&ListParams::default()).await.ok()?.items.len()
                + statefulsets.list(&ListParams::default()).await.ok()?.items.len();
            (left == 0).then_some(())
        }
    })
    .await;
}
