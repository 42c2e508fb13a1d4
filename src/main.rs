//! The `conclave` binary: a thin command line over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use conclave::clock::Clock;
use conclave::controller::leader::LeaseConfig;
use conclave::controller::{InitialList, Options};
use conclave::http::Health;
use conclave::metrics::Metrics;

#[derive(Parser)]
#[command(
    name = "conclave",
    version,
    about = "Private, end-to-end encrypted video conferencing on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD with --out-dir).
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print, offline, every object the operator would create for the Bridges and Meetings in
    /// the given files; generated secrets are shown as references. For reviewing GitOps changes.
    Render {
        /// A YAML file of Bridges and Meetings (`-` for stdin); repeat for more.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Namespace for objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Size the SFU pool for the given Meetings as at this instant (RFC 3339); default:
        /// the pool's minimum, so output does not depend on when it is rendered.
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve a LiveKit Bridge's join page: the page's files, its settings, the guest exchange,
    /// and the SFU's rooms kept equal to the operator's list of open rooms.
    Web(WebArgs),
}

#[derive(clap::Args)]
struct WebArgs {
    /// Address to listen on (the page, `/healthz` and `/readyz`).
    #[arg(long, env = "CONCLAVE_WEB_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The LiveKit signalling URL the page connects to (`wss://<domain>`); the Content-Security-
    /// Policy allows it and its https form, and nothing else besides the page's own origin.
    #[arg(long, env = "CONCLAVE_LIVEKIT_URL")]
    livekit_url: String,
    /// LiveKit's HTTP API as this server reaches it (in a cluster: the SFU Service); default:
    /// the http(s) form of --livekit-url.
    #[arg(long, env = "CONCLAVE_LIVEKIT_API_URL")]
    livekit_api_url: Option<String>,
    /// Directory of the built page (`web/` in the repository, built by npm).
    #[arg(long, env = "CONCLAVE_WEB_STATIC_DIR", default_value = conclave::web::DEFAULT_STATIC_DIR)]
    static_dir: PathBuf,
    /// The operator's list of open rooms (`{"rooms":[{"name":..,"maxParticipants":..}]}`); the
    /// SFU's rooms are created and deleted to match it. Without it rooms are left alone.
    #[arg(long, env = "CONCLAVE_ROOMS_FILE")]
    rooms_file: Option<PathBuf>,
    /// How often the rooms file is re-read and the SFU's rooms checked (e.g. `10s`, `500ms`).
    #[arg(long, env = "CONCLAVE_ROOMS_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    rooms_interval: std::time::Duration,
    /// The Bridge's LiveKit API key. The secret comes from LIVEKIT_API_SECRET only (never a
    /// flag, which other users could read in the process list).
    #[arg(long = "api-key", env = "LIVEKIT_API_KEY")]
    api_key: String,
    /// Guests one guest link lets in at once (then --guest-per-minute).
    #[arg(long, env = "CONCLAVE_GUEST_BURST", default_value_t = conclave::web::limits::DEFAULT_BURST)]
    guest_burst: std::num::NonZeroU32,
    /// Guests one guest link lets in per minute once its burst is used; all links together
    /// get ten times both.
    #[arg(long, env = "CONCLAVE_GUEST_PER_MINUTE", default_value_t = conclave::web::limits::DEFAULT_PER_MINUTE)]
    guest_per_minute: std::num::NonZeroU32,
    #[arg(long, env = "CONCLAVE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// `<n>s` or `<n>ms`, at least 100ms.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse().map(std::time::Duration::from_millis)
    } else if let Some(secs) = s.strip_suffix('s') {
        secs.parse().map(std::time::Duration::from_secs)
    } else {
        return Err(format!("{s:?}: give a number with s or ms"));
    }
    .map_err(|e| format!("{s:?}: {e}"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("{s:?}: at least 100ms"));
    }
    Ok(d)
}

/// The cluster the Bridges run in; `run` and `render` take the same flags, so a review shows
/// what the operator deploys.
#[derive(clap::Args)]
struct ClusterArgs {
    /// The cluster's DNS domain (the kubelet's --cluster-domain). Bridge components reach each
    /// other by fully-qualified Service names in it.
    #[arg(long, env = "CONCLAVE_CLUSTER_DOMAIN", default_value = conclave::bridge::context::DEFAULT_CLUSTER_DOMAIN, value_parser = cluster_domain)]
    cluster_domain: String,
    /// Pods have IPv6 (IPv6-only or IPv6-first dual-stack clusters): the Jitsi web server and
    /// prosody listen on IPv6 as well. Off (default): IPv4 only, which also starts on nodes whose
    /// kernel has IPv6 disabled.
    #[arg(long, env = "CONCLAVE_IPV6")]
    ipv6: bool,
}

impl ClusterArgs {
    fn cluster(&self) -> conclave::bridge::context::Cluster {
        conclave::bridge::context::Cluster {
            domain: self.cluster_domain.clone(),
            ipv6: self.ipv6,
        }
    }
}

/// A DNS domain such as `cluster.local`: lowercase labels of letters, digits and '-'; a
/// trailing dot is dropped.
fn cluster_domain(s: &str) -> Result<String, String> {
    let d = s.strip_suffix('.').unwrap_or(s);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() <= 253 && d.split('.').all(label_ok) {
        Ok(d.to_string())
    } else {
        Err(format!("{s:?} is not a DNS domain such as cluster.local"))
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Log format: `json` (default in a cluster) or `text`.
    #[arg(long, env = "CONCLAVE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Address of the HTTP server for /healthz, /readyz and /metrics. Port 0 picks a free port;
    /// the bound address is logged as `serving http on <address>`.
    #[arg(long, env = "CONCLAVE_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Watch Bridges and their children in this namespace only; empty: every namespace.
    #[arg(long, env = "CONCLAVE_WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Run the controllers only while holding a Lease, so that of several replicas one is active.
    #[arg(long, env = "CONCLAVE_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease; required with --leader-elect (in a cluster: the operator's own,
    /// from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the Lease; replicas with the same name and namespace elect one leader.
    #[arg(long, env = "CONCLAVE_LEASE_NAME", default_value = "conclave-operator")]
    lease_name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Test only: read "now" from this file (RFC 3339) instead of the system clock.
    #[arg(long, env = "CONCLAVE_CLOCK_FILE", hide = true)]
    clock_file: Option<PathBuf>,
    /// How long a watch may fail without a break before /healthz reports the operator
    /// unhealthy, so that a liveness probe restarts it (default 60s).
    #[arg(long, env = "CONCLAVE_WATCH_FAILURE_BOUND", value_parser = parse_bound)]
    watch_failure_bound: Option<std::time::Duration>,
    /// How the watches get what exists when they start: `streaming` (the API server sends the
    /// objects one by one as watch events; Kubernetes 1.34 and later), `paged` (lists of 500),
    /// or `auto`: streaming where the API server is 1.34 or later.
    #[arg(long, env = "CONCLAVE_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    initial_list: InitialList,
}

fn parse_bound(text: &str) -> Result<std::time::Duration, String> {
    conclave::duration::parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration like 60s"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Written to dhat-heap.json when `main` returns (a graceful stop).
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Run(args) => run(args),
        Command::Render {
            files,
            namespace,
            at,
            cluster,
        } => render(&files, &namespace, at, &cluster.cluster()),
        Command::Web(args) => web(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(
    files: &[PathBuf],
    namespace: &str,
    at: Option<chrono::DateTime<chrono::Utc>>,
    cluster: &conclave::bridge::context::Cluster,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut docs = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?
        };
        docs.push(text);
    }
    // Each file is its own YAML stream; joined as documents they render in the order given.
    let out = conclave::render::render(&docs.join("\n---\n"), namespace, at, cluster)?;
    // The operator creates these objects; applying them by hand would plant placeholder
    // secret values, hence the warning on top of the stream.
    print!(
        "# Rendered by `conclave render` for review only: do not apply. Placeholders in <...>\n# stand for values the operator generates in the cluster.\n{out}"
    );
    Ok(())
}

fn crds(out_dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let mut docs = Vec::new();
    for crd in conclave::crd::all() {
        let yaml = conclave::crd::to_yaml(&crd)?;
        match &out_dir {
            Some(dir) => std::fs::write(dir.join(conclave::crd::file_name(&crd)), &yaml)?,
            None => docs.push(yaml),
        }
    }
    if out_dir.is_none() {
        print!("{}", docs.join("---\n"));
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let lease = if args.leader_elect {
        let Some(namespace) = args.lease_namespace.filter(|ns| !ns.is_empty()) else {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--leader-elect needs the Lease's namespace: set --lease-namespace or POD_NAMESPACE",
                )
                .exit();
        };
        Some(LeaseConfig {
            namespace,
            name: args.lease_name,
            identity: identity()?,
        })
    } else {
        None
    };
    let options = Options {
        watch_namespace: Some(args.watch_namespace).filter(|ns| !ns.is_empty()),
        lease,
        cluster: args.cluster.cluster(),
        clock: args.clock_file.map_or(Clock::System, Clock::File),
        initial_list: args.initial_list,
    };

    init_logging(args.log_format);
    let health = Arc::new(Health::new(
        args.watch_failure_bound.unwrap_or(conclave::http::WATCH_FAILURE_BOUND),
    ));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(operate(args.http_address, options, health))
}

fn init_logging(format: Option<LogFormat>) {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format.unwrap_or(if in_cluster { LogFormat::Json } else { LogFormat::Text }) {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal: piped logs stay greppable.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

fn web(args: WebArgs) -> Result<(), Box<dyn std::error::Error>> {
    let api_secret = std::env::var("LIVEKIT_API_SECRET")
        .map_err(|_| "LIVEKIT_API_SECRET is not set: conclave web needs the Bridge's LiveKit API secret")?;
    init_logging(args.log_format);
    let options = conclave::web::Options {
        listen: args.listen,
        livekit_url: args.livekit_url,
        livekit_api_url: args.livekit_api_url,
        static_dir: args.static_dir,
        rooms_file: args.rooms_file,
        rooms_interval: args.rooms_interval,
        guest_limits: conclave::web::limits::Limits {
            burst: args.guest_burst,
            per_minute: args.guest_per_minute,
        },
        credentials: conclave::web::twirp::Credentials {
            api_key: args.api_key,
            api_secret,
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = on_signals()?;
        let stopped = async move {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        conclave::web::run(options, stopped).await?;
        tracing::info!("conclave web stopped");
        Ok(())
    })
}

/// Connecting to the API server takes milliseconds when it is up; kube's default of 30 s
/// would let a failing watch go quiet for that long between errors (see `http::Health`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn operate(
    http_address: SocketAddr,
    options: Options,
    health: Arc<Health>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Signals first: a SIGTERM during start-up must already take the graceful path.
    let shutdown = on_signals()?;
    let mut config = kube::Config::infer().await?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let client = conclave::api_client::client(config)?;
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(http_address)
        .await
        .map_err(|e| format!("binding the http server to {http_address}: {e}"))?;
    tracing::info!("serving http on {}", listener.local_addr()?);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(conclave::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        async {
            let _ = http_stopped.await;
        },
    ));

    tracing::info!(
        watch_namespace = options.watch_namespace.as_deref().unwrap_or("<all>"),
        leader_election = options.lease.is_some(),
        cluster_domain = %options.cluster.domain,
        ipv6 = options.cluster.ipv6,
        "conclave operator starting"
    );
    let result = conclave::controller::run(client, options, metrics, health.clone(), shutdown).await;
    health.set_live(false);
    // The server outlives the controllers so that metrics stay scrapeable while they drain.
    let _ = stop_http.send(());
    let _ = server.await;
    match result {
        Ok(()) => {
            tracing::info!("conclave operator stopped");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "conclave operator stopped");
            Err(e.into())
        }
    }
}

/// The first SIGTERM or SIGINT requests a graceful shutdown; a second one exits at once, for an
/// operator who does not want to wait for a slow reconcile.
fn on_signals() -> std::io::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested: no new work, finishing reconciles in flight"
        );
        tx.send_replace(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(rx)
}

/// This replica's name in the Lease: the Pod name in a cluster (unique among replicas and
/// stable across container restarts), else the host name with a random suffix so that two
/// processes on one machine differ.
fn identity() -> Result<String, Box<dyn std::error::Error>> {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return Ok(pod);
    }
    let host = hostname::get()?.to_string_lossy().into_owned();
    let mut suffix = [0u8; 3];
    rand::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{host}-{suffix}"))
}
