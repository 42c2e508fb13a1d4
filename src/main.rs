//! The `conclave` binary: a thin command line over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use conclave::clock::Clock;
use conclave::controller::Options;
use conclave::controller::leader::LeaseConfig;
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
    },
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
    /// Test only: read "now" from this file (RFC 3339) instead of the system clock.
    #[arg(long, env = "CONCLAVE_CLOCK_FILE", hide = true)]
    clock_file: Option<PathBuf>,
    /// How long a watch may fail without a break before /healthz reports the operator
    /// unhealthy, so that a liveness probe restarts it (default 60s).
    #[arg(long, env = "CONCLAVE_WATCH_FAILURE_BOUND", value_parser = parse_bound)]
    watch_failure_bound: Option<std::time::Duration>,
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
        Command::Render { files, namespace, at } => render(&files, &namespace, at),
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
    let out = conclave::render::render(&docs.join("\n---\n"), namespace, at)?;
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
        clock: args.clock_file.map_or(Clock::System, Clock::File),
    };

    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args
        .log_format
        .unwrap_or(if in_cluster { LogFormat::Json } else { LogFormat::Text })
    {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal: piped logs stay greppable.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    let health = Arc::new(Health::new(
        args.watch_failure_bound.unwrap_or(conclave::http::WATCH_FAILURE_BOUND),
    ));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(operate(args.http_address, options, health))
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
    let client = kube::Client::try_from(config)?;
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
