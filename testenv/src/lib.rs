//! A real, local Kubernetes control plane for Conclave's tests.
//!
//! [`ControlPlane::start`] runs etcd, kube-apiserver (RBAC on, audit log on),
//! kube-controller-manager (garbage collector and the workload controllers), kube-scheduler
//! and kwok (fake nodes whose Pods become Running and Ready) on free 127.0.0.1 ports, with
//! every certificate generated in-process.
//!
//! Most tests use [`shared()`], one control plane per test binary:
//!
//! ```no_run
//! # async fn t() {
//! let cp = testenv::shared();
//! let client = cp.client().await;
//! let ns = testenv::namespace(&client, "my-test").await;
//! # }
//! ```
//!
//! Fault tests can stop and start a component of a running control plane (etcd,
//! kube-apiserver, ...) on the same port with the same data, so every client keeps working:
//! [`ControlPlane::stop_component`], [`ControlPlane::start_component`],
//! [`ControlPlane::restart_component`].
//!
//! Binaries are found as described in [`tools_bin_dir`] (envtest's `TEST_ASSET_*` and
//! `KUBEBUILDER_ASSETS` first, then the project's `tests/tools/build.sh`).
//!
//! No component outlives the test process: children are spawned with
//! `PR_SET_PDEATHSIG(SIGKILL)` from a dedicated long-lived thread.
//!
//! Panics: the test helpers [`shared`], [`namespace`], [`wait_for`],
//! [`ControlPlane::client`], [`ControlPlane::client_as`], [`ControlPlane::kubeconfig_as`]
//! and [`ControlPlane::bin`] panic with a descriptive message instead of returning errors,
//! since a test cannot proceed without them. Everything else returns [`Error`].

mod controlplane;
mod error;
mod pki;
mod process;
mod restart;
mod tools;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};

pub use controlplane::{ControlPlane, KWOK_NODE_ANNOTATION, NodeCapacity, Options};
pub use error::Error;
pub use tools::{livekit_bin_dir, tools_bin_dir};

/// Label put on every namespace created by [`namespace`].
pub const TEST_NAMESPACE_LABEL: (&str, &str) = ("conclave.dev/test", "true");

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

extern "C" fn teardown_shared() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.teardown_at_exit();
    }
}

/// The control plane shared by all tests of this test binary, started (with
/// [`Options::default`]) on first call; concurrent callers wait for that one start.
///
/// It is never dropped: at normal process exit an `atexit` hook kills the components and
/// removes the state directory; if the process dies otherwise, PDEATHSIG kills them (the
/// temporary directory is then left behind in `$TMPDIR`).
///
/// Test helper: panics if the control plane cannot start, with the cause (later callers
/// get the same message rather than a second attempt).
pub fn shared() -> &'static ControlPlane {
    let result = SHARED.get_or_init(|| {
        let started = std::time::Instant::now();
        match ControlPlane::start(Options::default()) {
            Ok(cp) => {
                // SAFETY: registering a plain `extern "C" fn()` has no preconditions.
                unsafe {
                    libc::atexit(teardown_shared);
                }
                eprintln!(
                    "testenv: shared control plane at {} ready in {:.1}s (state in {})",
                    cp.server_url(),
                    started.elapsed().as_secs_f64(),
                    cp.state_dir().display()
                );
                Ok(cp)
            }
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Ok(cp) => {
            static SUPERVISOR: std::sync::Once = std::sync::Once::new();
            SUPERVISOR.call_once(|| {
                std::thread::spawn(|| cp.supervise());
            });
            cp
        }
        Err(e) => panic!("testenv: the shared control plane failed to start: {e}"),
    }
}

/// Creates a fresh namespace named `<prefix>-<random suffix>` (the API server's
/// `generateName`), labelled `conclave.dev/test=true`, waits until its `default`
/// ServiceAccount exists (so Pods can be created in it) and returns its name.
///
/// Test helper: panics if the namespace cannot be created (e.g. `prefix` is not a valid
/// DNS label) or the ServiceAccount does not appear within 30 s.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = match serde_json::from_value(serde_json::json!({
        "metadata": {
            "generateName": format!("{prefix}-"),
            "labels": { TEST_NAMESPACE_LABEL.0: TEST_NAMESPACE_LABEL.1 },
        },
    })) {
        Ok(ns) => ns,
        Err(e) => panic!("testenv: building namespace object: {e}"),
    };
    let created = match api.create(&PostParams::default(), &ns).await {
        Ok(ns) => ns,
        Err(e) => panic!("testenv: creating a namespace with prefix {prefix:?}: {e}"),
    };
    let Some(name) = created.metadata.name else {
        panic!("testenv: the API server returned a namespace without a name");
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("the default ServiceAccount in namespace {name}"),
        Duration::from_secs(30),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
    name
}

/// Polls `f` about every 100 ms until it returns `Some(value)` and returns that value.
///
/// Test helper: panics with `what` if `timeout` passes first (an individual call of `f` that
/// hangs past the deadline counts as a timeout too).
///
/// ```no_run
/// # async fn t(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) {
/// use std::time::Duration;
/// let pod = testenv::wait_for("pod web-0 to exist", Duration::from_secs(30), || async {
///     pods.get_opt("web-0").await.ok().flatten()
/// })
/// .await;
/// # }
/// ```
pub async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Some(v)) = tokio::time::timeout(remaining, f()).await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
