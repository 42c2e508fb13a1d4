//! The scale benchmark: a local control plane with room for every Pod, the operator as its own
//! process, Bridges and then Meetings created in parallel, and one table of what it cost. The
//! same code runs at full size from `cargo bench --bench scale` and at a smoke size in
//! `cargo test --test scale`, which asserts the behaviour behind the figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use conclave::api::{Bridge, Meeting};
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use testenv::{ControlPlane, NodeCapacity, Options, wait_for};

use super::probe::{self, AuditTail, Links};
use crate::common::operator::{Operator, http_get};
use crate::common::{install_crds, kubectl_ok, self_signed_tls};

/// How big a run is. Every field is a flag of the benchmark.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub bridges: usize,
    pub meetings: usize,
    /// Meetings in the first wave, after which memory is sampled (the slope's first point).
    pub first_wave: usize,
    /// Meetings created at once on the loaded operator for the latency figure.
    pub burst: usize,
    pub participants: usize,
    pub max_participants: i32,
    /// Meetings start at random within this many days (from tomorrow).
    pub days: i64,
    /// Fake nodes.
    pub nodes: usize,
    /// Creates in flight at once.
    pub parallel: usize,
    /// How long the operator is watched doing nothing.
    pub idle: Duration,
    /// Every n-th Bridge brings its own TLS Secret (the others use Conclave's CA); 0: none.
    pub byo_tls_every: usize,
    pub sfu_max_replicas: i32,
    /// Every n-th Meeting of each Bridge is running already (began 10 minutes ago, ends in 3
    /// hours, so it overlaps none of the scheduled ones and nothing is due during a run): it
    /// reserves capacity on its Bridge at once, so each changes the Bridge's status and may grow
    /// its pool, which is what used to re-reconcile every Meeting on the Bridge. 0: none.
    pub running_every: usize,
}

impl Sizes {
    /// The full size: 100 Bridges and 10,000 Meetings.
    pub fn full() -> Sizes {
        Sizes {
            bridges: 100,
            meetings: 10_000,
            first_wave: 1_000,
            burst: 100,
            participants: 5,
            max_participants: 20,
            days: 30,
            nodes: 6,
            parallel: 32,
            idle: Duration::from_secs(60),
            byo_tls_every: 10,
            sfu_max_replicas: 2,
            running_every: 10,
        }
    }

    /// What CI runs in `cargo test`.
    pub fn smoke() -> Sizes {
        Sizes {
            bridges: 10,
            meetings: 500,
            first_wave: 100,
            burst: 20,
            idle: Duration::from_secs(10),
            nodes: 3,
            parallel: 16,
            ..Sizes::full()
        }
    }
}

/// Every figure of one run.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub rss_bridges_only: u64,
    pub rss_first_wave: u64,
    pub rss_all: u64,
    /// The first operator's peak over its whole run: the creates, the burst, and every object
    /// reconciled again at once after the label.
    pub peak_rss: u64,
    /// TCP connections from the operator to the API server once the burst was linked.
    pub api_connections: usize,
    pub bridges_ready: Duration,
    pub creates: Duration,
    pub links_after_first_create: Duration,
    pub links_after_last_create: Duration,
    pub burst_p50: Duration,
    pub burst_p99: Duration,
    /// From the first create of the burst being sent to the last one's answer.
    pub burst_creates: Duration,
    /// Meeting and Bridge reconciles while the second wave of Meetings was created and linked.
    pub meeting_reconciles_per_meeting: f64,
    pub bridge_reconciles_per_meeting: f64,
    pub idle_writes: usize,
    /// Requests (not watches) per reconcile of objects that did not change.
    pub unchanged_reconciles: u64,
    pub unchanged_requests: usize,
    /// Reconciles run and seconds spent in them, by kind, until the burst was linked.
    pub reconcile_time: Vec<(String, u64, f64)>,
    /// What those requests and the restart's writes were, by verb and resource.
    pub unchanged_kinds: String,
    pub restart_write_kinds: String,
    pub restart_ready: Duration,
    pub restart_all_reconciled: Option<Duration>,
    pub restart_writes: usize,
    pub rss_restarted: u64,
    pub peak_rss_restarted: u64,
    pub watches: Vec<(String, usize)>,
    pub apiserver_peak_rss: u64,
    pub load: String,
}

impl Figures {
    /// Bytes of operator memory per Meeting between the first wave and all Meetings.
    pub fn bytes_per_meeting(&self, sizes: &Sizes) -> f64 {
        let more = sizes.meetings.saturating_sub(sizes.first_wave).max(1) as f64;
        (self.rss_all as f64 - self.rss_first_wave as f64) / more
    }

    pub fn requests_per_unchanged_reconcile(&self) -> f64 {
        self.unchanged_requests as f64 / self.unchanged_reconciles.max(1) as f64
    }

    /// The table, in Markdown.
    pub fn table(&self, sizes: &Sizes) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let (b, m) = (sizes.bridges, sizes.meetings);
        let watches = self
            .watches
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = [
            (
                format!("operator resident memory, {b} Bridges and no Meetings"),
                mib(self.rss_bridges_only),
            ),
            (
                format!("operator resident memory at {} / {m} Meetings", sizes.first_wave),
                format!("{} / {}", mib(self.rss_first_wave), mib(self.rss_all)),
            ),
            (
                "memory per additional Meeting (slope)".into(),
                format!("{:.2} KiB", self.bytes_per_meeting(sizes) / 1024.0),
            ),
            (
                format!("operator peak resident memory, {b} Bridges + {m} Meetings (the whole run before the restart)"),
                mib(self.peak_rss),
            ),
            (
                "same, after a restart with everything in place (now / peak)".into(),
                format!("{} / {}", mib(self.rss_restarted), mib(self.peak_rss_restarted)),
            ),
            (
                "connections to the API server after the burst".into(),
                self.api_connections.to_string(),
            ),
            (
                format!("{b} Bridges Ready after their creation"),
                secs(self.bridges_ready),
            ),
            (
                format!("links for all {m} Meetings after the first create (creates took)"),
                format!("{} ({})", secs(self.links_after_first_create), secs(self.creates)),
            ),
            (
                "links for all after the last create".into(),
                secs(self.links_after_last_create),
            ),
            (
                format!(
                    "{} Meetings created at once: create → status.credentialsSecret",
                    sizes.burst
                ),
                format!(
                    "p50 {}, p99 {} (the creates alone took {})",
                    ms(self.burst_p50),
                    ms(self.burst_p99),
                    ms(self.burst_creates)
                ),
            ),
            (
                "reconciles per Meeting created (Meeting / Bridge)".into(),
                format!(
                    "{:.2} / {:.3}",
                    self.meeting_reconciles_per_meeting, self.bridge_reconciles_per_meeting
                ),
            ),
            (
                "reconciles until the burst was linked: count, seconds in them, mean".into(),
                self.reconcile_time
                    .iter()
                    .map(|(kind, n, secs)| {
                        format!("{kind} {n}, {secs:.1} s, {:.1} ms", secs * 1000.0 / (*n).max(1) as f64)
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            (
                format!("writes while idle, {} s", sizes.idle.as_secs()),
                self.idle_writes.to_string(),
            ),
            (
                "API requests per reconcile of an unchanged object".into(),
                format!(
                    "{:.3} ({} requests / {} reconciles){}",
                    self.requests_per_unchanged_reconcile(),
                    self.unchanged_requests,
                    self.unchanged_reconciles,
                    self.unchanged_kinds
                ),
            ),
            (
                "restart: time to /readyz, every object reconciled, writes".into(),
                format!(
                    "{}, {}, {}{}",
                    secs(self.restart_ready),
                    self.restart_all_reconciled
                        .map_or("not within the deadline".into(), secs),
                    self.restart_writes,
                    self.restart_write_kinds
                ),
            ),
            ("watches opened".into(), watches),
            (
                "kube-apiserver peak resident memory".into(),
                mib(self.apiserver_peak_rss),
            ),
            ("machine load (uptime) at the end".into(), self.load.clone()),
        ];
        let mut out = String::from("| figure | measured |\n|---|---|\n");
        for (figure, value) in rows {
            let _ = writeln!(out, "| {figure} | {value} |");
        }
        out
    }
}

/// The namespace everything is created in.
const NS: &str = "bench";
const USER: &str = "conclave-bench";
const RESTARTED: &str = "conclave-bench-restarted";
/// First NodePort of the SFU media ports; Bridge `i` gets `sfu_max_replicas` ports from
/// `MEDIA_PORT + i * sfu_max_replicas`.
const MEDIA_PORT: i32 = 30000;

fn bridge(i: usize, sizes: &Sizes) -> Bridge {
    let byo = sizes.byo_tls_every > 0 && i % sizes.byo_tls_every == sizes.byo_tls_every - 1;
    let tls = if byo {
        json!({"secretName": format!("b{i}-tls")})
    } else {
        json!(null)
    };
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": format!("b{i}"), "namespace": NS},
        "spec": {
            "domain": format!("b{i}.bench.example.com"),
            "tls": tls,
            "turn": {"enabled": false},
            "sfu": {"replicas": 1, "maxReplicas": sizes.sfu_max_replicas,
                    "media": {"exposure": "NodePort", "port": MEDIA_PORT + i as i32 * sizes.sfu_max_replicas}},
        }
    }))
    .expect("bridge")
}

/// Meeting `i`: on Bridge `i mod bridges`, an hour long, starting at a spread but repeatable
/// time between tomorrow and `days` from now (so nothing is due while the benchmark runs), or
/// running already (every `running_every`-th).
fn meeting(i: usize, sizes: &Sizes) -> Meeting {
    let minutes = (i as i64).wrapping_mul(7919) % ((sizes.days - 1).max(1) * 24 * 60);
    // Counted per Bridge, so that every Bridge gets its share.
    let (start, end) = if sizes.running_every > 0 && (i / sizes.bridges.max(1)).is_multiple_of(sizes.running_every) {
        (
            Utc::now() - chrono::Duration::minutes(10),
            Utc::now() + chrono::Duration::hours(3),
        )
    } else {
        let start = Utc::now() + chrono::Duration::days(1) + chrono::Duration::minutes(minutes);
        (start, start + chrono::Duration::hours(1))
    };
    let participants: Vec<_> = (0..sizes.participants)
        .map(|p| json!({"name": format!("p{p}"), "moderator": p == 0}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": format!("m{i:05}"), "namespace": NS},
        "spec": {"bridge": format!("b{}", i % sizes.bridges), "start": start,
                 "end": end,
                 "maxParticipants": sizes.max_participants, "participants": participants},
    }))
    .expect("meeting")
}

/// Creates Meetings `range` with `parallel` creates in flight; returns when the last returned.
async fn create_meetings(api: &Api<Meeting>, range: std::ops::Range<usize>, sizes: &Sizes) {
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            let m = meeting(i, sizes);
            async move {
                api.create(&PostParams::default(), &m)
                    .await
                    .unwrap_or_else(|e| panic!("creating Meeting {i}: {e}"))
            }
        })
        .buffer_unordered(sizes.parallel)
        .collect::<Vec<_>>()
        .await;
}

async fn wait_links(links: &Links, n: usize, timeout: Duration) {
    wait_for(&format!("{n} Meetings with links"), timeout, || async {
        (links.count() >= n).then_some(())
    })
    .await;
}

/// Waits until the operator has run no reconcile for `quiet`.
async fn settle(port: u16, quiet: Duration, timeout: Duration) {
    let mut last = (probe::total_reconciles(port), Instant::now());
    wait_for("the operator to settle", timeout, || {
        let now = probe::total_reconciles(port);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let settled = last.1.elapsed() >= quiet;
        async move { settled.then_some(()) }
    })
    .await;
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load average {} (2 cores)", f.join(", "))
        })
        .unwrap_or_default()
}

/// Runs the benchmark at `sizes` against the operator binary `bin`; `log` receives progress
/// lines.
pub async fn run(sizes: &Sizes, bin: &Path, log: impl Fn(&str)) -> Figures {
    let mut fig = Figures::default();
    let cp = ControlPlane::start(Options {
        nodes: sizes.nodes,
        node_capacity: NodeCapacity {
            cpu: 2000,
            memory_gib: 8192,
            pods: 2000,
        },
        timeout: Duration::from_secs(300),
        ..Options::default()
    })
    .expect("control plane");
    install_crds(&cp);
    kubectl_ok(&cp, &["create", "namespace", NS]);
    let client = cp.client().await;
    log("control plane up");

    let audit_path = cp.state_dir().join("audit.log");
    let mut audit = AuditTail::from_now(audit_path.clone());
    let kubeconfig = cp.kubeconfig_as(USER, &["system:masters"]);
    let env = [("RUST_LOG", "info,kube=warn")];
    let operator = Operator::quiet(bin, USER, &kubeconfig, &[], &env);
    let port = operator.http_port().await;
    operator.wait_ready(port).await;
    let pid = operator.pid();
    log("operator ready");

    // Bridges.
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), NS);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    futures::stream::iter(0..sizes.bridges)
        .map(|i| {
            let (bridges, secrets) = (bridges.clone(), secrets.clone());
            let b = bridge(i, sizes);
            async move {
                if let Some(name) = b.spec.tls.as_ref().and_then(|t| t.secret_name.clone()) {
                    secrets
                        .create(&PostParams::default(), &self_signed_tls(&name, &b.spec.domain))
                        .await
                        .expect("TLS Secret");
                }
                bridges.create(&PostParams::default(), &b).await.expect("Bridge")
            }
        })
        .buffer_unordered(sizes.parallel)
        .collect::<Vec<_>>()
        .await;
    wait_for(
        &format!("{} Bridges Ready", sizes.bridges),
        Duration::from_secs(600),
        || async {
            let all = bridges.list(&ListParams::default()).await.ok()?.items;
            let ready = all.iter().filter(|b| is_ready(b)).count();
            (ready == sizes.bridges).then_some(())
        },
    )
    .await;
    fig.bridges_ready = started.elapsed();
    settle(port, Duration::from_secs(3), Duration::from_secs(300)).await;
    fig.rss_bridges_only = probe::memory(pid).0;
    log(&format!("{} Bridges Ready", sizes.bridges));

    // The first wave of Meetings, then the rest.
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), NS);
    let links = Links::watch(meetings.clone());
    let link_timeout = Duration::from_secs(60 + sizes.meetings as u64 / 5);
    let first = Instant::now();
    create_meetings(&meetings, 0..sizes.first_wave, sizes).await;
    wait_links(&links, sizes.first_wave, link_timeout).await;
    settle(port, Duration::from_secs(3), Duration::from_secs(300)).await;
    fig.rss_first_wave = probe::memory(pid).0;
    log(&format!("{} Meetings linked", sizes.first_wave));
    let before = probe::reconciles(port);
    create_meetings(&meetings, sizes.first_wave..sizes.meetings, sizes).await;
    let last_create = Instant::now();
    fig.creates = last_create - first;
    wait_links(&links, sizes.meetings, link_timeout).await;
    let done = links.last().unwrap_or(last_create);
    fig.links_after_first_create = done - first;
    fig.links_after_last_create = done.saturating_duration_since(last_create);
    settle(port, Duration::from_secs(3), Duration::from_secs(600)).await;
    let after = probe::reconciles(port);
    let delta = |kind: &str| after.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0);
    let second_wave = (sizes.meetings - sizes.first_wave).max(1) as f64;
    fig.meeting_reconciles_per_meeting = delta("Meeting") as f64 / second_wave;
    fig.bridge_reconciles_per_meeting = delta("Bridge") as f64 / second_wave;
    fig.rss_all = probe::memory(pid).0;
    log(&format!("{} Meetings linked", sizes.meetings));

    // A burst on the loaded operator.
    let burst_started = Instant::now();
    let burst: Vec<(String, Instant)> = futures::future::join_all((0..sizes.burst).map(|k| {
        let i = sizes.meetings + k;
        let (api, m) = (meetings.clone(), meeting(i, sizes));
        async move {
            let sent = Instant::now();
            api.create(&PostParams::default(), &m).await.expect("burst Meeting");
            (format!("m{i:05}"), sent)
        }
    }))
    .await;
    // What the API server alone takes for the creates: the floor under the latency figure.
    fig.burst_creates = burst_started.elapsed();
    wait_links(&links, sizes.meetings + sizes.burst, Duration::from_secs(120)).await;
    let mut latencies: Vec<f64> = burst
        .iter()
        .filter_map(|(name, sent)| Some(links.at(name)?.saturating_duration_since(*sent).as_secs_f64()))
        .collect();
    fig.burst_p50 = Duration::from_secs_f64(probe::quantile(&mut latencies, 0.5));
    fig.burst_p99 = Duration::from_secs_f64(probe::quantile(&mut latencies, 0.99));
    let api_port = cp
        .server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    fig.api_connections = probe::connections_to(pid, api_port);
    let counts = probe::reconciles(port);
    fig.reconcile_time = probe::reconcile_seconds(port)
        .into_iter()
        .map(|(kind, secs)| (kind.clone(), counts.get(&kind).copied().unwrap_or(0), secs))
        .collect();
    log("burst linked");

    // Idle.
    settle(port, Duration::from_secs(5), Duration::from_secs(600)).await;
    audit.read(USER);
    tokio::time::sleep(sizes.idle).await;
    fig.idle_writes = audit.read(USER).iter().filter(|r| r.is_write()).count();
    log("idle measured");

    // Reconciles of unchanged objects: a label on every Bridge reconciles it and its Meetings.
    let before = probe::total_reconciles(port);
    for i in 0..sizes.bridges {
        bridges
            .patch(
                &format!("b{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"bench": "touched"}}})),
            )
            .await
            .expect("label Bridge");
    }
    let want = (sizes.bridges + sizes.meetings + sizes.burst) as u64;
    let waited = tokio::time::timeout(Duration::from_secs(300), async {
        while probe::total_reconciles(port) < before + want {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if waited.is_err() {
        log("not every object was reconciled after the label; counting what ran");
    }
    settle(port, Duration::from_secs(3), Duration::from_secs(300)).await;
    fig.unchanged_reconciles = probe::total_reconciles(port) - before;
    let calls: Vec<probe::Request> = audit.read(USER).into_iter().filter(|r| r.is_call()).collect();
    fig.unchanged_requests = calls.len();
    fig.unchanged_kinds = probe::breakdown(&calls);
    log("unchanged reconciles measured");

    // The peak over the whole run: re-reconciling everything at once queues every object.
    fig.peak_rss = probe::memory(pid).1;

    // Restart with everything in place.
    operator.sigterm();
    let mut operator = operator;
    operator.wait_exit(Duration::from_secs(60)).await;
    let mut audit = AuditTail::from_now(audit_path);
    let kubeconfig = cp.kubeconfig_as(RESTARTED, &["system:masters"]);
    let started = Instant::now();
    let restarted = Operator::quiet(bin, RESTARTED, &kubeconfig, &[], &env);
    let port = restarted.http_port().await;
    restarted.wait_ready(port).await;
    fig.restart_ready = started.elapsed();
    let objects = sizes.bridges + sizes.meetings + sizes.burst;
    let all = tokio::time::timeout(Duration::from_secs(300), async {
        while probe::reconciled_objects(&restarted.log()) < objects {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    fig.restart_all_reconciled = all.ok().map(|()| started.elapsed());
    settle(port, Duration::from_secs(3), Duration::from_secs(300)).await;
    let requests = audit.read(RESTARTED);
    let writes: Vec<probe::Request> = requests.iter().filter(|r| r.is_write()).cloned().collect();
    fig.restart_writes = writes.len();
    fig.restart_write_kinds = probe::breakdown(&writes);
    let mut watches = std::collections::BTreeMap::<String, usize>::new();
    for r in requests.iter().filter(|r| r.opens_watch()) {
        *watches.entry(r.resource.clone()).or_default() += 1;
    }
    fig.watches = watches.into_iter().collect();
    (fig.rss_restarted, fig.peak_rss_restarted) = probe::memory(restarted.pid());
    fig.apiserver_peak_rss = probe::component_pid(&cp.pids(), "kube-apiserver").map_or(0, |p| probe::memory(p).1);
    fig.load = uptime();
    let _ = http_get(port, "/healthz");
    log("restart measured");
    fig
}

fn is_ready(b: &Bridge) -> bool {
    b.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The operator binary cargo built with the benchmark or test (release for `cargo bench`,
/// debug for `cargo test`).
pub fn operator_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_conclave"))
}
