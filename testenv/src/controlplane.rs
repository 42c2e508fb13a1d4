//! Starting, using and stopping one local control plane.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tempfile::TempDir;

use crate::pki::{self, Ca};
use crate::process::{self, Proc};
use crate::{Error, tools};

/// Options for [`ControlPlane::start`]. Build with struct-update syntax from `default()`:
///
/// ```no_run
/// let opts = testenv::Options { kwok: false, ..Default::default() };
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// Run kwok and create fake nodes, so that Pods get scheduled and become Running/Ready.
    /// Default `true`. Without it there are no nodes and Pods stay Pending.
    pub kwok: bool,
    /// Where to keep certificates, kubeconfigs, logs, the audit log and etcd's data. When
    /// `None` a temporary directory is used and removed on drop; a given directory is kept
    /// (its previous etcd data is wiped so every start is a fresh cluster).
    pub state_dir: Option<PathBuf>,
    /// How many fake nodes to create when `kwok` is on (named `kwok-node-0..`). Default 3.
    pub nodes: usize,
    /// What each fake node offers the scheduler. Default: kwok's 32 CPUs, 128 GiB, 110 pods.
    pub node_capacity: NodeCapacity,
    /// Deadline for the whole start-up, readiness included. Default 120 s.
    pub timeout: Duration,
    /// kube-apiserver's `--feature-gates` (`Name=true|false`), for clusters configured unlike
    /// the default. Default none.
    pub feature_gates: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kwok: true,
            state_dir: None,
            nodes: 3,
            node_capacity: NodeCapacity::default(),
            timeout: Duration::from_secs(120),
            feature_gates: Vec::new(),
        }
    }
}

/// Allocatable (and capacity) of each fake node. Nothing runs, so any size is free; a
/// benchmark with hundreds of Pods needs more than kwok's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    pub cpu: u32,
    pub memory_gib: u32,
    pub pods: u32,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        NodeCapacity {
            cpu: 32,
            memory_gib: 128,
            pods: 110,
        }
    }
}

/// Annotation by which kwok recognises the nodes it must manage.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The Pod IP range kwok assigns from (data only, nothing listens there).
const POD_CIDR: &str = "10.244.128.0/17";
/// The Service IP range (configuration only, there is no kube-proxy).
const SERVICE_CIDR: &str = "10.96.0.0/16";

/// Grace period between SIGTERM and SIGKILL on [`ControlPlane::stop`].
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Set this variable (to anything) to keep the temporary state directory for inspection.
const KEEP_ENV: &str = "CONCLAVE_TESTENV_KEEP";

/// Prefix of temporary state directories in `$TMPDIR`.
const TEMP_PREFIX: &str = "conclave-testenv-";
/// File in a temporary state directory naming the process that owns it.
const OWNER_FILE: &str = "owner";

/// `<pid> <start time>`: the start time (field 22 of /proc/<pid>/stat) tells a recycled pid
/// from the original process.
fn owner_tag(pid: u32) -> String {
    format!("{pid} {}", process_start_time(pid).unwrap_or_default())
}

fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)" start at field 3; the start time is field 22.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Removes temporary state directories whose owning process is gone. A test binary that is
/// SIGKILLed cannot clean up (its components die by PDEATHSIG, but ~60 MB of etcd data per
/// run would pile up); the next run does it instead. Only directories with an owner file of
/// ours are touched. Best effort: errors are ignored.
fn sweep_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let pid = owner.split_whitespace().next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && is_ours
            && owner_tag(pid) != owner
        {
            tracing::debug!(dir = %path.display(), "removing stale state directory");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A running local control plane: etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler and (optionally) kwok, all bound to 127.0.0.1.
///
/// Dropping it stops every process and removes its temporary state directory. Even without
/// a drop (a static, a crash, SIGKILL of the test binary) no process survives the process
/// that started it: they are spawned with `PR_SET_PDEATHSIG(SIGKILL)`.
pub struct ControlPlane {
    state_dir: PathBuf,
    temp: Mutex<Option<TempDir>>,
    kubeconfig: PathBuf,
    server_url: String,
    audit_log: PathBuf,
    ca: Ca,
    ca_file: PathBuf,
    bins: BTreeMap<&'static str, PathBuf>,
    pub(crate) procs: Mutex<Vec<Proc>>,
    pub(crate) pids: Mutex<Vec<u32>>,
    /// Components stopped by [`ControlPlane::stop_component`], with their place in `procs`.
    pub(crate) stopped: Mutex<Vec<(usize, Proc)>>,
    /// Distinguishes the kubeconfig files written by `kubeconfig_as`.
    identities: AtomicU64,
}

/// The loopback ports of one control plane.
#[derive(Clone, Copy)]
struct Ports {
    etcd: u16,
    etcd_peer: u16,
    apiserver: u16,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (a Vec of children),
    // so poisoning is not a reason to leak processes.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

fn yaml(value: &serde_json::Value) -> Result<String, Error> {
    serde_saphyr::to_string(value).map_err(|e| Error::Other(format!("serialising YAML: {e}")))
}

/// Free loopback ports. The listeners are held until all ports are chosen so one call never
/// returns the same port twice, and ports handed out earlier in this process are skipped so
/// two control planes in one test binary do not collide. (Another process could still take
/// a port between here and the component binding it; that window is a few milliseconds.)
fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = lock(&USED);
    let used = used.get_or_insert_with(HashSet::new);
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding a free port", e))?;
        let port = l.local_addr().map_err(|e| Error::io("reading a bound port", e))?.port();
        if used.insert(port) {
            ports.push(port);
        }
        listeners.push(l);
    }
    Ok(ports)
}

/// A kubeconfig with everything embedded, so it stays valid when copied elsewhere.
fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, pair: &pki::Pair) -> Result<String, Error> {
    yaml(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "testenv",
            "cluster": {
                "server": server,
                "certificate-authority-data": pki::base64(ca_pem.as_bytes()),
            },
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": pki::base64(pair.cert_pem.as_bytes()),
                "client-key-data": pki::base64(pair.key_pem.as_bytes()),
            },
        }],
        "contexts": [{
            "name": "testenv",
            "context": { "cluster": "testenv", "user": user, "namespace": "default" },
        }],
        "current-context": "testenv",
    }))
}

/// Loads a kubeconfig file into a client bound to the current tokio runtime.
pub(crate) async fn client_from(path: &Path) -> Result<kube::Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|e| Error::kube("building a client", e))
}

impl ControlPlane {
    /// Starts a control plane and blocks until it is ready: `/readyz` passes, the `default`
    /// ServiceAccount exists (so kube-controller-manager works) and, with kwok, all fake
    /// nodes are Ready. Safe to call from inside or outside a tokio runtime (the readiness
    /// checks run on a private runtime on their own thread).
    ///
    /// On failure everything started so far is stopped, and the error carries the tail of
    /// the failing component's log.
    pub fn start(opts: Options) -> Result<ControlPlane, Error> {
        let began = Instant::now();
        let deadline = began + opts.timeout;

        // Resolve binaries first: a missing binary should fail before anything is started.
        let mut bins = BTreeMap::new();
        let mut needed = vec!["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"];
        if opts.kwok {
            needed.push("kwok");
        }
        for name in needed {
            bins.insert(name, tools::resolve(name)?);
        }

        let (state_dir, temp) = match &opts.state_dir {
            Some(dir) => {
                mkdir(dir)?;
                let dir = dir
                    .canonicalize()
                    .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
                // A previous run's etcd data belongs to a CA and service-account key that no
                // longer exist; start from scratch.
                let etcd = dir.join("etcd");
                if etcd.exists() {
                    std::fs::remove_dir_all(&etcd).map_err(|e| Error::io(format!("removing {}", etcd.display()), e))?;
                }
                (dir, None)
            }
            None => {
                sweep_stale_temp_dirs();
                let t = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempdir()
                    .map_err(|e| Error::io("creating a temporary state directory", e))?;
                write(&t.path().join(OWNER_FILE), owner_tag(std::process::id()))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        for sub in ["pki", "logs", "etcd", "kubeconfigs"] {
            mkdir(&state_dir.join(sub))?;
        }

        let ports = free_ports(3)?;
        let ports = Ports {
            etcd: ports[0],
            etcd_peer: ports[1],
            apiserver: ports[2],
        };
        let server_url = format!("https://127.0.0.1:{}", ports.apiserver);
        let ca = Ca::new()?;
        let ca_file = state_dir.join("pki/ca.crt");

        let cp = ControlPlane {
            kubeconfig: state_dir.join("kubeconfig"),
            audit_log: state_dir.join("audit.log"),
            state_dir,
            temp: Mutex::new(temp),
            server_url,
            ca,
            ca_file,
            bins,
            procs: Mutex::new(Vec::new()),
            pids: Mutex::new(Vec::new()),
            stopped: Mutex::new(Vec::new()),
            identities: AtomicU64::new(0),
        };
        // From here on an error drops `cp`, which stops whatever was started.
        cp.launch(&opts, ports, deadline)?;
        tracing::info!(
            server = %cp.server_url,
            state_dir = %cp.state_dir.display(),
            secs = began.elapsed().as_secs_f64(),
            "control plane ready"
        );
        Ok(cp)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.state_dir.join(rel)
    }

    /// Writes all certificates and config files, then starts the components in order,
    /// waiting for each stage's readiness.
    fn launch(&self, opts: &Options, ports: Ports, deadline: Instant) -> Result<(), Error> {
        let p = |rel: &str| self.path(rel);
        let s = |path: PathBuf| path.display().to_string();

        // PKI.
        write(&self.ca_file, &self.ca.pair.cert_pem)?;
        write(&p("pki/ca.key"), &self.ca.pair.key_pem)?;
        let serving = self.ca.serving()?;
        write(&p("pki/apiserver.crt"), &serving.cert_pem)?;
        write(&p("pki/apiserver.key"), &serving.key_pem)?;
        let (sa_key, sa_pub) = pki::service_account_key()?;
        write(&p("pki/sa.key"), sa_key)?;
        write(&p("pki/sa.pub"), sa_pub)?;

        // Kubeconfigs: one identity per component so the audit log tells them apart.
        let admin = self.ca.client("admin", &["system:masters"])?;
        write(
            &self.kubeconfig,
            kubeconfig_yaml(&self.server_url, &self.ca.pair.cert_pem, "admin", &admin)?,
        )?;
        // With --use-service-account-credentials=false every controller acts as the
        // controller-manager itself, whose bootstrap role does not cover all controllers;
        // system:masters does.
        let components: [(&str, &str, &[&str]); 3] = [
            (
                "kube-controller-manager",
                "system:kube-controller-manager",
                &["system:masters"],
            ),
            // The scheduler's bootstrap RBAC (system:kube-scheduler) is sufficient.
            ("kube-scheduler", "system:kube-scheduler", &[]),
            // kwok impersonates kubelets (node status, leases, pod status, deletions).
            ("kwok", "kwok", &["system:masters"]),
        ];
        for (name, user, groups) in components {
            let pair = self.ca.client(user, groups)?;
            let path = p(&format!("kubeconfigs/{name}.kubeconfig"));
            write(
                &path,
                kubeconfig_yaml(&self.server_url, &self.ca.pair.cert_pem, user, &pair)?,
            )?;
        }

        // Audit: every request at Metadata level, one event per request (RequestReceived is
        // omitted so that counting writes does not count each twice). Blocking mode writes
        // the event before the response is sent, so tests see it as soon as the call returns.
        write(
            &p("audit-policy.yaml"),
            yaml(&json!({
                "apiVersion": "audit.k8s.io/v1",
                "kind": "Policy",
                "omitStages": ["RequestReceived"],
                "rules": [{ "level": "Metadata" }],
            }))?,
        )?;

        let etcd_url = format!("http://127.0.0.1:{}", ports.etcd);
        let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
        self.spawn(
            "etcd",
            vec![
                "--name=testenv".into(),
                format!("--data-dir={}", s(p("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=testenv={peer_url}"),
                "--initial-cluster-state=new".into(),
                // Durability is pointless for a throwaway cluster and fsync dominates latency.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;

        self.spawn(
            "kube-apiserver",
            vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The endpoint reconciler refuses a loopback advertise address; nothing runs
                // in-cluster that would need the `kubernetes` Service's endpoints.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={}", ports.apiserver),
                format!("--tls-cert-file={}", s(p("pki/apiserver.crt"))),
                format!("--tls-private-key-file={}", s(p("pki/apiserver.key"))),
                format!("--client-ca-file={}", s(p("pki/ca.crt"))),
                "--authorization-mode=Node,RBAC".into(),
                format!("--service-account-key-file={}", s(p("pki/sa.pub"))),
                format!("--service-account-signing-key-file={}", s(p("pki/sa.key"))),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                format!("--audit-policy-file={}", s(p("audit-policy.yaml"))),
                format!("--audit-log-path={}", s(self.audit_log.clone())),
                "--audit-log-mode=blocking".into(),
                // No rotation: audit_events() reads a single file.
                "--audit-log-maxsize=0".into(),
                "--audit-log-maxbackup=0".into(),
            ]
            .into_iter()
            .chain(
                (!opts.feature_gates.is_empty()).then(|| format!("--feature-gates={}", opts.feature_gates.join(","))),
            )
            .collect(),
        )?;

        self.block_on(async {
            let admin = client_from(&self.kubeconfig).await?;
            self.until("kube-apiserver /readyz", deadline, || {
                let admin = admin.clone();
                async move {
                    let req = kube::core::Request::new("")
                        .get("readyz", &Default::default())
                        .map_err(|e| e.to_string())?;
                    admin.request_text(req).await.map_err(|e| e.to_string())
                }
            })
            .await?;

            self.spawn(
                "kube-controller-manager",
                vec![
                    format!(
                        "--kubeconfig={}",
                        s(p("kubeconfigs/kube-controller-manager.kubeconfig"))
                    ),
                    "--leader-elect=false".into(),
                    "--use-service-account-credentials=false".into(),
                    format!("--service-account-private-key-file={}", s(p("pki/sa.key"))),
                    format!("--root-ca-file={}", s(p("pki/ca.crt"))),
                    format!("--cluster-signing-cert-file={}", s(p("pki/ca.crt"))),
                    format!("--cluster-signing-key-file={}", s(p("pki/ca.key"))),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    // All on-by-default controllers, among them the garbage collector,
                    // namespace, serviceaccount(-token), deployment, replicaset, statefulset
                    // and daemonset controllers.
                    "--controllers=*".into(),
                    "--secure-port=0".into(),
                ],
            )?;
            self.spawn(
                "kube-scheduler",
                vec![
                    format!("--kubeconfig={}", s(p("kubeconfigs/kube-scheduler.kubeconfig"))),
                    "--leader-elect=false".into(),
                    "--secure-port=0".into(),
                ],
            )?;
            if opts.kwok {
                self.create_nodes(&admin, opts.nodes, opts.node_capacity).await?;
                write(&p("kwok.yaml"), kwok_config())?;
                self.spawn(
                    "kwok",
                    vec![
                        format!("--kubeconfig={}", s(p("kubeconfigs/kwok.kubeconfig"))),
                        format!("--config={}", s(p("kwok.yaml"))),
                        format!(
                            "--manage-nodes-with-annotation-selector={}={}",
                            KWOK_NODE_ANNOTATION.0, KWOK_NODE_ANNOTATION.1
                        ),
                        format!("--cidr={POD_CIDR}"),
                        // Lease-based heartbeats, as a kubelet does; without them
                        // kube-controller-manager's node lifecycle controller would mark the
                        // nodes NotReady after its grace period and evict their Pods.
                        "--node-lease-duration-seconds=40".into(),
                    ],
                )?;
            }

            let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
            self.until("the default ServiceAccount (kube-controller-manager)", deadline, || {
                let sa = sa.clone();
                async move {
                    match sa.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not created yet".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;

            if opts.kwok {
                let nodes: Api<Node> = Api::all(admin.clone());
                let want = opts.nodes;
                self.until("fake nodes to be Ready (kwok)", deadline, || {
                    let nodes = nodes.clone();
                    async move {
                        let list = nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
                        let ready = list.items.iter().filter(|n| node_ready(n)).count();
                        if ready >= want {
                            Ok(())
                        } else {
                            Err(format!("{ready}/{want} nodes Ready"))
                        }
                    }
                })
                .await?;
            }
            Ok(())
        })
    }

    /// Runs `fut` to completion on a private current-thread runtime on a fresh thread, so
    /// that `start` works whether or not the caller is inside a tokio runtime.
    pub(crate) fn block_on<T: Send>(&self, fut: impl Future<Output = Result<T, Error>> + Send) -> Result<T, Error> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Error::io("building a tokio runtime", e))?
                        .block_on(fut)
                })
                .join()
                .unwrap_or_else(|_| Err(Error::Other("readiness thread panicked".into())))
        })
    }

    /// Polls `check` every 100 ms until it succeeds, the deadline passes, or a component dies
    /// (then the error carries that component's log tail).
    pub(crate) async fn until<T, F, Fut>(&self, what: &str, deadline: Instant, mut check: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let started = Instant::now();
        let mut last;
        loop {
            self.check_alive()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining.min(Duration::from_secs(10)), check()).await {
                Ok(Ok(v)) => {
                    tracing::debug!(what, secs = started.elapsed().as_secs_f64(), "ready");
                    return Ok(v);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = "check timed out".into(),
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = lock(&self.procs)
                    .iter()
                    .map(|p| format!("--- {} ---\n{}", p.log.display(), process::log_tail(&p.log, 15)))
                    .collect();
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: started.elapsed().as_secs_f64(),
                    detail: format!("; last error: {last}\n{}", logs.join("\n")),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&self) -> Result<(), Error> {
        lock(&self.procs).iter_mut().try_for_each(Proc::check)
    }

    fn spawn(&self, name: &'static str, args: Vec<String>) -> Result<(), Error> {
        let bin = self
            .bins
            .get(name)
            .ok_or_else(|| Error::Other(format!("binary {name} was not resolved")))?;
        let proc = Proc::start(name, bin, &args, self.path(&format!("logs/{name}.log")))?;
        lock(&self.pids).push(proc.child.id());
        lock(&self.procs).push(proc);
        Ok(())
    }

    /// Creates the fake nodes kwok will manage. Their addresses are pure data (nothing
    /// listens there): InternalIP 10.244.0.1x and ExternalIP 203.0.113.1x (TEST-NET-3,
    /// documentation range). They carry no taint so that ordinary workloads land on them.
    async fn create_nodes(&self, client: &kube::Client, n: usize, capacity: NodeCapacity) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let resources = json!({
            "cpu": capacity.cpu.to_string(),
            "memory": format!("{}Gi", capacity.memory_gib),
            "pods": capacity.pods.to_string(),
        });
        for i in 0..n {
            let name = format!("kwok-node-{i}");
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1,
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "node-role.kubernetes.io/agent": "",
                    },
                },
                "spec": {},
                // Node creation keeps .status (kubelets register this way), so the addresses
                // are in place before kwok first looks at the node.
                "status": {
                    "addresses": [
                        { "type": "InternalIP", "address": format!("10.244.0.{}", 10 + i) },
                        { "type": "ExternalIP", "address": format!("203.0.113.{}", 10 + i) },
                        { "type": "Hostname", "address": name },
                    ],
                    "allocatable": resources.clone(),
                    "capacity": resources.clone(),
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeletVersion": "fake",
                        "kubeProxyVersion": "",
                        "containerRuntimeVersion": "kwok",
                        "kernelVersion": "kwok",
                        "osImage": "kwok",
                        "bootID": "",
                        "machineID": "",
                        "systemUUID": "",
                    },
                },
            }))
            .map_err(|e| Error::Other(format!("building node {name}: {e}")))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map_err(|e| Error::kube(format!("creating node {name}"), e))?;
        }
        Ok(())
    }

    /// Stops every component: SIGTERM, then SIGKILL after a 10 s grace period, and reaps
    /// them. Idempotent. The state directory stays until the `ControlPlane` is dropped.
    pub fn stop(&mut self) {
        self.shutdown(STOP_GRACE);
    }

    fn shutdown(&self, grace: Duration) {
        let mut procs = lock(&self.procs);
        if procs.is_empty() {
            return;
        }
        // Clients first, then the API server, then etcd, so that no component spends its
        // shutdown retrying a dependency that is already gone.
        let split = procs.iter().position(|p| p.name == "etcd").map_or(0, |i| i + 1);
        let (storage, rest) = procs.split_at_mut(split);
        let apiserver_at = rest.iter().position(|p| p.name == "kube-apiserver");
        if let Some(i) = apiserver_at {
            let (api, clients) = rest.split_at_mut(i);
            process::terminate(clients, grace);
            process::terminate(api, grace);
        } else {
            process::terminate(rest, grace);
        }
        process::terminate(storage, grace);
        procs.clear();
    }

    /// Used at process exit for the shared instance: no graceful shutdown, just kill, reap
    /// and remove the temporary directory. Never blocks on a lock held elsewhere.
    pub(crate) fn teardown_at_exit(&self) {
        if let Ok(mut procs) = self.procs.try_lock() {
            process::terminate(&mut procs, Duration::ZERO);
            procs.clear();
        }
        if let Ok(mut temp) = self.temp.try_lock() {
            Self::dispose(temp.take());
        }
    }

    fn dispose(temp: Option<TempDir>) {
        // Without KEEP_ENV, dropping the TempDir removes it.
        if let Some(t) = temp
            && std::env::var_os(KEEP_ENV).is_some()
        {
            let kept = t.keep();
            eprintln!("testenv: kept state directory {}", kept.display());
        }
    }

    /// The cluster-admin kubeconfig (user `admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The state directory: `logs/<component>.log`, `audit.log`, `pki/`, kubeconfigs.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The CA certificate (PEM) file that signs the serving and all client certificates.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A fresh cluster-admin client bound to the calling task's tokio runtime.
    ///
    /// Test helper: panics with the cause if the client cannot be built.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("testenv: building the admin client failed: {e}"))
    }

    /// A fresh client authenticated by a client certificate (signed by the cluster CA) for
    /// user `user` in groups `groups` (the API server adds `system:authenticated`).
    ///
    /// Test helper: panics with the cause on failure; see [`ControlPlane::try_client_as`].
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        self.try_client_as(user, groups)
            .await
            .unwrap_or_else(|e| panic!("testenv: building a client for {user} failed: {e}"))
    }

    /// Like [`ControlPlane::client_as`], returning errors.
    pub async fn try_client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client, Error> {
        let path = self.try_kubeconfig_as(user, groups)?;
        client_from(&path).await
    }

    /// Writes a kubeconfig for `user`/`groups` (see [`ControlPlane::client_as`]) into the
    /// state directory and returns its path, e.g. to run the operator as a subprocess.
    ///
    /// Test helper: panics with the cause on failure; see [`ControlPlane::try_kubeconfig_as`].
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> PathBuf {
        self.try_kubeconfig_as(user, groups)
            .unwrap_or_else(|e| panic!("testenv: writing a kubeconfig for {user} failed: {e}"))
    }

    /// Like [`ControlPlane::kubeconfig_as`], returning errors.
    pub fn try_kubeconfig_as(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let pair = self.ca.client(user, groups)?;
        let n = self.identities.fetch_add(1, Ordering::Relaxed);
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let path = self.path(&format!("kubeconfigs/user-{n}-{safe}.kubeconfig"));
        write(
            &path,
            kubeconfig_yaml(&self.server_url, &self.ca.pair.cert_pem, user, &pair)?,
        )?;
        Ok(path)
    }

    /// `kubectl --kubeconfig <admin kubeconfig>`; add arguments and run.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `helm` with `KUBECONFIG` set to the admin kubeconfig, and helm's cache/config/data
    /// directories inside the state directory so tests never touch the user's helm setup.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.path("helm/cache"))
            .env("HELM_CONFIG_HOME", self.path("helm/config"))
            .env("HELM_DATA_HOME", self.path("helm/data"));
        cmd
    }

    /// The path of a tool binary or file (`etcd`, `kubectl`, `helm`, `kwok`,
    /// `cert-manager-crds`, ...), resolved like the control-plane binaries (see
    /// [`crate::tools_bin_dir`]).
    ///
    /// Test helper: panics with a message naming the binary and how to get it if it cannot
    /// be found.
    pub fn bin(&self, name: &str) -> PathBuf {
        if let Some(p) = self.bins.get(name) {
            return p.clone();
        }
        let found = if tools::is_known(name) {
            tools::resolve(name)
        } else {
            // Not a binary with envtest conventions (e.g. `cert-manager-crds/`).
            tools::tools_bin_dir().map(|dir| dir.join(name)).and_then(|p| {
                if p.exists() {
                    Ok(p)
                } else {
                    Err(Error::Other(format!("{} does not exist", p.display())))
                }
            })
        };
        found.unwrap_or_else(|e| panic!("testenv: {e}"))
    }

    /// All audit events logged so far (one JSON object per API request, `Metadata` level:
    /// `verb`, `user.username`, `objectRef`, `responseStatus`, ...). A partially written last
    /// line is skipped.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let Ok(text) = std::fs::read_to_string(&self.audit_log) else {
            return Vec::new();
        };
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The process ids of every component started (including already stopped ones).
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown(STOP_GRACE);
        let temp = lock(&self.temp).take();
        Self::dispose(temp);
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// kwok's `--config`: the Stages that drive node and pod status (the `kwok` binary has
/// none built in).
fn kwok_config() -> &'static str {
    include_str!("kwok-stages.yaml")
}
