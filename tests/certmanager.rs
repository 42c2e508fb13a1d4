//! `spec.tls.issuerRef` against cert-manager's real CRDs (v1.21.1, built from its Go module by
//! `tests/tools/build.sh`): the operator notices cert-manager's CRDs appear after it started
//! (and go again) without a restart, its Certificate passes the API server's validation with
//! cert-manager's schema, the Bridge waits for the Secret, and picks it up when cert-manager
//! (played here by the test, as there is no cert-manager controller) writes it.

mod common;

use std::time::Duration;

use common::operator::Operator;
use common::{cluster, kubectl_ok, wait_condition};
use conclave::api::Bridge;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use testenv::wait_for;

#[tokio::test]
async fn issuer_ref_creates_a_valid_certificate_and_waits_for_its_secret() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "certmanager").await;
    // Started before cert-manager is installed.
    let operator = Operator::start("conclave-certmanager-test", &ns);
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "acme"},
        "spec": {"domain": "acme.example.com", "turn": {"enabled": false},
                 "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
                 "sfu": {"media": {"port": 31500}}}
    }))
    .expect("bridge");
    bridges.create(&PostParams::default(), &bridge).await.expect("bridge");
    wait_condition(&bridges, "acme", "CertificateReady", "False", "CertManagerMissing").await;

    // cert-manager's CRDs arrive: the operator notices without a restart.
    let crds = cp.bin("cert-manager-crds");
    kubectl_ok(cp, &["apply", "--server-side", "-f", &crds.to_string_lossy()]);
    kubectl_ok(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
        ],
    );

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    );
    let certificates: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let cert = wait_for("the Certificate", Duration::from_secs(60), || {
        let certificates = certificates.clone();
        async move { certificates.get_opt("acme-tls").await.ok().flatten() }
    })
    .await;
    let spec = &cert.data["spec"];
    assert_eq!(spec["secretName"], "acme-tls");
    assert_eq!(spec["dnsNames"], json!(["acme.example.com"]));
    assert_eq!(
        spec["issuerRef"],
        json!({"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert_eq!(spec["privateKey"]["rotationPolicy"], "Always");
    let owner = &cert.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Bridge", Some(true)));

    wait_condition(&bridges, "acme", "CertificateReady", "False", "Issuing").await;

    // What cert-manager writes: a kubernetes.io/tls Secret with the secretTemplate's labels.
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = rcgen::CertificateParams::new(vec!["acme.example.com".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert")
        .pem();
    let labels = spec["secretTemplate"]["labels"].clone();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "acme-tls", "labels": labels},
        "stringData": {"tls.crt": pem, "tls.key": key.serialize_pem()}
    }))
    .expect("secret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("issued secret");
    wait_condition(&bridges, "acme", "CertificateReady", "True", "Valid").await;
    // The issued Secret is cert-manager's: the operator must not prune it.
    assert!(secrets.get_opt("acme-tls").await.expect("get").is_some());

    // cert-manager is uninstalled: noticed too, and said so.
    kubectl_ok(
        cp,
        &[
            "delete",
            "crd",
            "certificates.cert-manager.io",
            "--wait=true",
            "--timeout=60s",
        ],
    );
    wait_condition(&bridges, "acme", "CertificateReady", "False", "CertManagerMissing").await;
    assert_eq!(
        operator.log_count(&["conclave operator starting"]),
        1,
        "the same operator process throughout"
    );
}
