//! The Bridge reconciler against the real control plane: the operator runs as a process (as
//! its own identity), children appear with their key settings, readiness flows into status,
//! drift is repaired, toggles prune, a converged Bridge costs zero writes, and deletion cascades.

mod common;

use std::time::Duration;

use common::operator::Operator;
use common::{cluster, condition, create_tls_secret, events_for, label_bridge, wait_condition, wait_event, wait_ready};
use conclave::api::Bridge;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::wait_for;

const OPERATOR_USER: &str = "conclave-operator-test";

/// The ExternalIP of the node an SFU replica's StatefulSet is pinned to by required affinity.
async fn pinned_external_ip(nodes: &Api<k8s_openapi::api::core::v1::Node>, sts: &StatefulSet) -> String {
    let node = sts
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .and_then(|r| r.node_selector_terms.first())
        .and_then(|t| t.match_expressions.as_ref()?.first())
        .and_then(|e| e.values.as_ref()?.first().cloned())
        .expect("replica is pinned to a node");
    nodes
        .get(&node)
        .await
        .expect("pinned node exists")
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "ExternalIP")
        .expect("the pinned node has an ExternalIP")
        .address
}

#[tokio::test]
async fn bridge_lifecycle() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "bridge").await;
    let operator = Operator::start(OPERATOR_USER, &ns);

    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
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
        let external = pinned_external_ip(&nodes, &sts).await;
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
    // NetworkPolicies are applied last.
    wait_for("NetworkPolicies", Duration::from_secs(30), || {
        let policies = policies.clone();
        async move {
            let list = policies.list(&ListParams::default()).await.ok()?;
            (!list.items.is_empty()).then_some(())
        }
    })
    .await;

    // TURN is announced nowhere until its load balancer has an address (spec.domain is the
    // Ingress's, not TURN's); then at exactly that address, here a DNS name only (as an AWS NLB
    // reports), played by the test writing the Service status as a cloud controller would.
    let b = wait_condition(&bridges, "meet", "TURNReady", "False", "AwaitingAddress").await;
    assert_eq!(b.status.map(|s| s.turn_uris), Some(Vec::new()));
    services
        .patch_status(
            "meet-turn",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"hostname": "turn-lb.example.net"}]}}})),
        )
        .await
        .expect("TURN load balancer address");

    // Readiness (kwok runs the pods) flows into status.
    let b = wait_ready(&bridges, "meet").await;
    let status = b.status.expect("status");
    assert_eq!(status.url.as_deref(), Some("https://meet.example.com/"));
    let sfu = status.sfu.expect("sfu status");
    assert_eq!((sfu.replicas, sfu.ready_replicas, sfu.endpoints.len()), (2, 2, 2));
    // No `turns:`: TLS clients check the certificate (for meet.example.com) against the name.
    assert_eq!(
        status.turn_uris,
        [
            "turn:turn-lb.example.net:3478?transport=udp",
            "turn:turn-lb.example.net:3478?transport=tcp"
        ]
    );
    let prosody = deployments.get("meet-prosody").await.expect("prosody");
    let env = prosody.spec.template.spec.expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let value = |k: &str| env.iter().find(|e| e.name == k).and_then(|e| e.value.clone());
    assert_eq!(value("TURN_HOST").as_deref(), Some("turn-lb.example.net"));
    assert_eq!(value("STUN_HOST").as_deref(), Some("turn-lb.example.net"));

    // Converged: a change that alters no child (a label on the Bridge) is reconciled with zero writes.
    // The reconcile that made the Bridge Ready announces it with an Event right after the status
    // write the wait above saw; that write belongs to the transition, so it must land first.
    wait_event(&client, &ns, "meet", "Normal", "Ready").await;
    let before = operator.log_count(&["reconciled"]);
    let writes_before = operator.writes().len();
    label_bridge(&bridges, "meet", "touched", "yes").await;
    wait_for("a reconcile after the label change", Duration::from_secs(30), || {
        let n = operator.log_count(&["reconciled"]);
        async move { (n > before).then_some(()) }
    })
    .await;
    let writes = operator.writes();
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

fn secret_text(s: &Secret, key: &str) -> String {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret has {key}"));
    String::from_utf8(bytes.0.clone()).expect("utf-8")
}

/// A Bridge without TURN whose SFU uses NodePort `port` (NodePorts are cluster-wide, so every
/// test Bridge needs its own).
fn bridge_manifest(name: &str, port: i32, tls: serde_json::Value) -> Bridge {
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": name},
        "spec": {"domain": format!("{name}.example.com"), "tls": tls, "turn": {"enabled": false},
                 "sfu": {"media": {"port": port}}}
    }))
    .expect("bridge")
}

/// No `spec.tls`: Conclave's CA issues the serving certificate, renews it when the clock says
/// it is due, and secrets rotate on request without touching the ones not asked for.
#[tokio::test]
async fn own_ca_issues_and_renews_and_secrets_rotate() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "ownca").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let start = chrono::Utc::now();
    let operator = Operator::with_clock("conclave-ownca-test", &ns, dir.path(), start);
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut manifest = bridge_manifest("selfca", 31100, serde_json::Value::Null);
    manifest.spec.tls = None;
    bridges.create(&PostParams::default(), &manifest).await.expect("bridge");

    let b = wait_condition(&bridges, "selfca", "CertificateReady", "True", "IssuedByConclaveCA").await;
    let ca = secrets.get("selfca-ca").await.expect("CA Secret");
    let tls = secrets.get("selfca-tls").await.expect("serving Secret");
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca_pem = conclave::bridge::ca::Pem {
        cert: secret_text(&ca, "ca.crt"),
        key: secret_text(&ca, "ca.key"),
    };
    let serving = conclave::bridge::ca::Pem {
        cert: secret_text(&tls, "tls.crt"),
        key: secret_text(&tls, "tls.key"),
    };
    assert_eq!(secret_text(&tls, "ca.crt"), ca_pem.cert, "clients get the CA to trust");
    assert_eq!(
        conclave::bridge::ca::check_serving(Some(&serving), &ca_pem, &["selfca.example.com"], start),
        None,
        "the serving certificate names the domain, chains to the CA and is fresh"
    );
    let first = conclave::bridge::ca::inspect(&serving.cert).expect("inspect");
    assert_eq!(first.dns_names, vec!["selfca.example.com"]);
    for s in [&ca, &tls] {
        let owner = &s.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Bridge", Some(true)));
    }
    assert_eq!(
        b.status.as_ref().and_then(|s| s.url.as_deref()),
        Some("https://selfca.example.com/")
    );
    let issued = events_for(&client, &ns, "selfca").await;
    assert!(
        issued.contains(&("Normal".into(), "CertificateIssued".into())),
        "{issued:?}"
    );

    // 61 days later the certificate (90 days, renewed 30 days ahead) is due: a new one with a
    // new key, from the same CA.
    let later = start + chrono::Duration::days(61);
    operator.set_now(later);
    label_bridge(&bridges, "selfca", "tick", "1").await;
    let renewed = wait_for("a renewed certificate", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        let old = serving.cert.clone();
        async move {
            let s = secrets.get("selfca-tls").await.ok()?;
            (secret_text(&s, "tls.crt") != old).then_some(s)
        }
    })
    .await;
    let info = conclave::bridge::ca::inspect(&secret_text(&renewed, "tls.crt")).expect("inspect");
    assert!(info.not_before > first.not_before + chrono::Duration::days(60));
    assert_ne!(secret_text(&renewed, "tls.key"), serving.key, "a fresh key at renewal");
    let ca_after = secrets.get("selfca-ca").await.expect("CA Secret");
    assert_eq!(secret_text(&ca_after, "ca.crt"), ca_pem.cert, "the CA is kept");

    // Rotation of one key: only that value changes, and pods get the rotation annotation.
    let generated = secrets.get("selfca-secrets").await.expect("generated Secret");
    bridges
        .patch(
            "selfca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "conclave.dev/rotate-secrets": "2026-11-26",
                "conclave.dev/rotate-keys": "turn-secret"}}})),
        )
        .await
        .expect("request rotation");
    let rotated = wait_for("turn-secret rotated", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        let old = secret_text(&generated, "turn-secret");
        async move {
            let s = secrets.get("selfca-secrets").await.ok()?;
            (secret_text(&s, "turn-secret") != old).then_some(s)
        }
    })
    .await;
    for key in ["jwt-app-secret", "jicofo-password", "jvb-password"] {
        assert_eq!(secret_text(&rotated, key), secret_text(&generated, key), "{key} kept");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_for("pods carry the rotation", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("selfca-prosody").await.ok()?;
            let a = d.spec.template.metadata?.annotations?;
            (a.get("conclave.dev/secrets-revision").map(String::as_str) == Some("2026-11-26")).then_some(())
        }
    })
    .await;
    let events = events_for(&client, &ns, "selfca").await;
    assert!(
        events.contains(&("Normal".into(), "SecretsRotated".into())),
        "{events:?}"
    );
    // The same annotation again rotates nothing: the generated Secret is not written again.
    let version = rotated.metadata.resource_version.clone();
    label_bridge(&bridges, "selfca", "tick", "2").await;
    let seen = operator.log_count(&["reconciled", "selfca"]);
    wait_for("a reconcile after the poke", Duration::from_secs(30), || {
        let n = operator.log_count(&["reconciled", "selfca"]);
        async move { (n > seen).then_some(()) }
    })
    .await;
    let again = secrets.get("selfca-secrets").await.expect("generated Secret");
    assert_eq!(again.metadata.resource_version, version, "no second rotation");
}

/// A TLS Secret named by the Bridge that does not exist yet: a condition with the reason and a
/// Warning Event, then Ready once it appears, without anyone touching the Bridge.
#[tokio::test]
async fn missing_tls_secret_is_reported_then_picked_up() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "byotls").await;
    let _operator = Operator::start("conclave-byotls-test", &ns);
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(
            &PostParams::default(),
            &bridge_manifest("late", 31200, json!({"secretName": "byo-tls"})),
        )
        .await
        .expect("bridge");
    wait_condition(&bridges, "late", "CertificateReady", "False", "SecretNotFound").await;
    wait_for("a Warning Event", Duration::from_secs(30), || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let events = events_for(&client, &ns, "late").await;
            events
                .contains(&("Warning".into(), "SecretNotFound".into()))
                .then_some(())
        }
    })
    .await;
    create_tls_secret(&client, &ns, "byo-tls", "late.example.com").await;
    wait_condition(&bridges, "late", "CertificateReady", "True", "Valid").await;

    // A second Bridge asking for the same NodePort: a condition naming the clash, not a loop.
    bridges
        .create(
            &PostParams::default(),
            &bridge_manifest("clash", 31200, json!({"secretName": "byo-tls"})),
        )
        .await
        .expect("bridge");
    let b = wait_condition(&bridges, "clash", "ChildrenApplied", "False", "PortInUse").await;
    assert_eq!(condition(&b, "Ready").map(|c| c.0).as_deref(), Some("False"));
}

/// HostPort and LoadBalancer exposure, live: a HostPort replica binds its port on its pinned
/// node and advertises that node's ExternalIP, and coturn runs on the host network; a
/// LoadBalancer replica waits (`AwaitingAddress`) until its Service has an address, then
/// advertises exactly that address. The load balancer is played by the test, which writes the
/// Service status as a cloud controller would.
#[tokio::test]
async fn host_port_and_load_balancer_exposure() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "exposure").await;
    let _operator = Operator::start("conclave-exposure-test", &ns);
    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let manifest = |name: &str, exposure: &str, port: i32, turn: serde_json::Value| -> Bridge {
        serde_json::from_value(json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
            "metadata": {"name": name},
            "spec": {"domain": format!("{name}.example.com"), "tls": {"secretName": "byo-tls"},
                     "turn": turn, "sfu": {"replicas": 2, "media": {"exposure": exposure, "port": port}}}
        }))
        .expect("bridge")
    };
    bridges
        .create(
            &PostParams::default(),
            &manifest(
                "hp",
                "HostPort",
                11000,
                json!({"exposure": "HostPort", "port": 3479, "tlsPort": 5350}),
            ),
        )
        .await
        .expect("HostPort bridge");
    bridges
        .create(
            &PostParams::default(),
            &manifest("lb", "LoadBalancer", 12000, json!({"enabled": false})),
        )
        .await
        .expect("LoadBalancer bridge");

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let jvb_env = |sts: &StatefulSet, key: &str| -> Option<String> {
        let pod = sts.spec.template.spec.clone()?;
        pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.name == key)
            .and_then(|e| e.value)
    };

    // HostPort: the port is bound on the node, the address is the node's, there is no Service.
    for i in 0..2 {
        let name = format!("hp-sfu-{i}");
        let sts = wait_for(&format!("StatefulSet {name}"), Duration::from_secs(60), || {
            let (statefulsets, name) = (statefulsets.clone(), name.clone());
            async move { statefulsets.get_opt(&name).await.ok().flatten() }
        })
        .await;
        let pod = sts.spec.template.spec.clone().expect("pod");
        let port = &pod.containers[0].ports.clone().expect("ports")[0];
        assert_eq!((port.container_port, port.host_port), (11000 + i, Some(11000 + i)));
        let external = pinned_external_ip(&nodes, &sts).await;
        assert_eq!(jvb_env(&sts, "JVB_ADVERTISE_IPS"), Some(external));
        assert!(
            services.get_opt(&name).await.expect("get").is_none(),
            "no Service with HostPort"
        );
    }
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(client.clone(), &ns);
    let turn = wait_for("coturn DaemonSet", Duration::from_secs(60), || {
        let daemonsets = daemonsets.clone();
        async move { daemonsets.get_opt("hp-turn").await.ok().flatten() }
    })
    .await;
    assert_eq!(
        turn.spec.template.spec.expect("pod").host_network,
        Some(true),
        "TURN with HostPort runs on the host network"
    );
    wait_ready(&bridges, "hp").await;

    // LoadBalancer: no address yet, so nothing is advertised and the Bridge says why.
    let b = wait_condition(&bridges, "lb", "SFUReady", "False", "AwaitingAddress").await;
    assert_eq!(condition(&b, "Ready").map(|c| c.0).as_deref(), Some("False"));
    for i in 0..2 {
        let name = format!("lb-sfu-{i}");
        let svc = wait_for(&format!("Service {name}"), Duration::from_secs(60), || {
            let (services, name) = (services.clone(), name.clone());
            async move { services.get_opt(&name).await.ok().flatten() }
        })
        .await;
        assert_eq!(svc.spec.as_ref().and_then(|s| s.type_.as_deref()), Some("LoadBalancer"));
    }
    // A load balancer with only a host name cannot be advertised (ICE needs IPs): said, not waited on.
    services
        .patch_status(
            "lb-sfu-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"hostname": "sfu0.elb.example.net"}]}}})),
        )
        .await
        .expect("host-name-only load balancer");
    let b = wait_condition(&bridges, "lb", "SFUReady", "False", "AddressNotIP").await;
    let message = b
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "SFUReady"))
        .map(|c| c.message)
        .unwrap_or_default();
    assert!(message.contains("lb-sfu-0 (sfu0.elb.example.net)"), "{message}");
    for (i, ip) in [(0, "198.51.100.7"), (1, "198.51.100.8")] {
        let name = format!("lb-sfu-{i}");
        services
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
            )
            .await
            .expect("load balancer address");
    }
    for (i, ip) in [(0, "198.51.100.7"), (1, "198.51.100.8")] {
        let name = format!("lb-sfu-{i}");
        wait_for(&format!("{name} advertises {ip}"), Duration::from_secs(60), || {
            let (statefulsets, name) = (statefulsets.clone(), name.clone());
            async move {
                let sts = statefulsets.get_opt(&name).await.ok().flatten()?;
                (jvb_env(&sts, "JVB_ADVERTISE_IPS").as_deref() == Some(ip)).then_some(())
            }
        })
        .await;
    }
    let b = wait_ready(&bridges, "lb").await;
    assert_eq!(
        b.status.and_then(|s| s.sfu).map(|s| s.endpoints),
        Some(vec!["198.51.100.7:12000".to_string(), "198.51.100.8:12001".to_string()])
    );
}
