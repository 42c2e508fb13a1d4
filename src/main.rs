//! The `conclave` binary: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Run {
        /// Log format: `json` (default in a cluster) or `text`.
        #[arg(long, env = "CONCLAVE_LOG_FORMAT")]
        log_format: Option<LogFormat>,
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "CONCLAVE_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Test only: read "now" from this file (RFC 3339) instead of the system clock.
        #[arg(long, env = "CONCLAVE_CLOCK_FILE", hide = true)]
        clock_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Run {
            log_format,
            watch_namespace,
            clock_file,
        } => run(log_format, watch_namespace.filter(|n| !n.is_empty()), clock_file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave: {e}");
            ExitCode::FAILURE
        }
    }
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

fn run(
    log_format: Option<LogFormat>,
    watch_namespace: Option<String>,
    clock_file: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_format.unwrap_or(if in_cluster { LogFormat::Json } else { LogFormat::Text }) {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal: piped logs stay greppable.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!("conclave operator starting");
        let clock = clock_file.map_or(conclave::clock::Clock::System, conclave::clock::Clock::File);
        conclave::controller::run(client, clock, watch_namespace).await?;
        tracing::info!("conclave operator stopped");
        Ok(())
    })
}
