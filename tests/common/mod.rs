//! Shared helpers for the integration tests: one control plane per test binary, with the
//! Conclave CRDs installed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testenv::ControlPlane;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test binary's control plane, with `crds/` applied and Established.
pub fn cluster() -> &'static ControlPlane {
    static READY: OnceLock<()> = OnceLock::new();
    let cp = testenv::shared();
    READY.get_or_init(|| {
        install_crds(cp);
        // Established comes before the OpenAPI document is republished; tests that explain
        // fields or validate client-side need both kinds in it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(kubectl(cp, &["explain", "bridge.spec"]).status.success()
            && kubectl(cp, &["explain", "meeting.spec"]).status.success())
        {
            assert!(
                Instant::now() < deadline,
                "the CRDs never appeared in the OpenAPI document"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    cp
}

/// Applies `crds/` to `cp` and waits until both kinds are Established.
pub fn install_crds(cp: &ControlPlane) {
    kubectl_ok(
        cp,
        &["apply", "--server-side", "-f", &repo().join("crds").to_string_lossy()],
    );
    kubectl_ok(
        cp,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/bridges.conclave.dev",
            "crd/meetings.conclave.dev",
        ],
    );
}

/// Runs kubectl and returns its output whatever the exit code.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.kubectl().args(args).output().expect("kubectl runs")
}

/// Runs kubectl and panics with its stderr unless it succeeds; returns stdout.
pub fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = kubectl(cp, args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `*.yaml` file in a directory of the repository, sorted.
pub fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect("directory exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

pub mod operator;

/// A self-signed `kubernetes.io/tls` Secret `name` for `domain`, as a user would bring.
pub fn self_signed_tls(name: &str, domain: &str) -> k8s_openapi::api::core::v1::Secret {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![domain.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name},
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}
    }))
    .expect("secret")
}

/// `(status, reason)` of a Bridge's condition `type_`.
pub fn condition(b: &conclave::api::Bridge, type_: &str) -> Option<(String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.to_string(), c.reason.to_string()))
}

/// Waits until Bridge `name` has condition `type_` with `status` and `reason`; returns it.
pub async fn wait_condition(
    bridges: &kube::Api<conclave::api::Bridge>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> conclave::api::Bridge {
    let want = (status.to_string(), reason.to_string());
    let what = format!("Bridge {name} {type_}={status} ({reason})");
    wait_bridge(bridges, name, &what, Duration::from_secs(60), |b| {
        condition(b, type_).as_ref() == Some(&want)
    })
    .await
}

/// Waits until Bridge `name` is Ready (kwok runs its pods; allow for a busy machine).
pub async fn wait_ready(bridges: &kube::Api<conclave::api::Bridge>, name: &str) -> conclave::api::Bridge {
    let what = format!("Bridge {name} Ready");
    wait_bridge(bridges, name, &what, Duration::from_secs(120), |b| {
        condition(b, "Ready").is_some_and(|(status, _)| status == "True")
    })
    .await
}

async fn wait_bridge(
    bridges: &kube::Api<conclave::api::Bridge>,
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&conclave::api::Bridge) -> bool,
) -> conclave::api::Bridge {
    testenv::wait_for(what, timeout, || async {
        let b = bridges.get(name).await.ok()?;
        done(&b).then_some(b)
    })
    .await
}

/// Sets a label on Bridge `name`: a change that alters no child, to make the operator
/// reconcile it (and, through it, its Meetings) now.
pub async fn label_bridge(bridges: &kube::Api<conclave::api::Bridge>, name: &str, key: &str, value: &str) {
    bridges
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .expect("label the Bridge");
}

/// Creates the user-provided TLS Secret `name` for `domain` in `namespace`.
pub async fn create_tls_secret(client: &kube::Client, namespace: &str, name: &str, domain: &str) {
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &self_signed_tls(name, domain))
        .await
        .expect("create the TLS Secret");
}

/// Events published about an object, as `(type, reason)`.
pub async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client.clone(), ns);
    events
        .list(&kube::api::ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect()
}

/// Waits until an Event of `type_` with `reason` about object `name` exists.
pub async fn wait_event(client: &kube::Client, ns: &str, name: &str, type_: &str, reason: &str) {
    let want = (type_.to_string(), reason.to_string());
    testenv::wait_for(
        &format!("a {type_} Event {reason} about {name}"),
        Duration::from_secs(60),
        || {
            let want = want.clone();
            async move { events_for(client, ns, name).await.contains(&want).then_some(()) }
        },
    )
    .await;
}

/// `(status, reason, message)` of a Meeting's condition `type_`.
pub fn meeting_condition(m: &conclave::api::Meeting, type_: &str) -> Option<(String, String, String)> {
    m.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.to_string(), c.reason.to_string(), c.message.clone()))
}

/// Waits until Meeting `name` satisfies `done`; returns it.
pub async fn wait_meeting(
    meetings: &kube::Api<conclave::api::Meeting>,
    name: &str,
    what: &str,
    done: impl Fn(&conclave::api::Meeting) -> bool,
) -> conclave::api::Meeting {
    testenv::wait_for(&format!("Meeting {name}: {what}"), Duration::from_secs(60), || async {
        let m = meetings.get(name).await.ok()?;
        done(&m).then_some(m)
    })
    .await
}

/// `(status, reason, message)` of a Bridge's condition `type_`.
pub fn condition_message(b: &conclave::api::Bridge, type_: &str) -> Option<(String, String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.to_string(), c.reason.to_string(), c.message.clone()))
}

/// A Secret's values as strings (every value Conclave writes is UTF-8).
pub fn secret_strings(s: &k8s_openapi::api::core::v1::Secret) -> std::collections::BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// A typed object from test JSON.
pub fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}
