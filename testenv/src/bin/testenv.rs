//! `testenv`: run the test control plane outside of `cargo test` (used by the demo script).
//!
//! ```text
//! testenv up --state-dir DIR [--no-kwok]   # foreground; DIR/kubeconfig, then DIR/ready
//! testenv tools                            # print the tools bin dir (building if needed)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "testenv", about = "Local Kubernetes control plane for Conclave tests")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the control plane and keep it running until SIGINT/SIGTERM.
    Up {
        /// Directory for kubeconfig, certificates, logs and etcd data (created if missing).
        #[arg(long)]
        state_dir: PathBuf,
        /// Do not run kwok (no fake nodes; Pods stay Pending).
        #[arg(long)]
        no_kwok: bool,
    },
    /// Print the tools bin dir (etcd, kube-apiserver, kubectl, kwok, helm, ...).
    Tools,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up { state_dir, no_kwok } => up(state_dir, !no_kwok),
        Cmd::Tools => testenv::tools_bin_dir().map(|dir| println!("{}", dir.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testenv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(state_dir: PathBuf, kwok: bool) -> Result<(), testenv::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| testenv::Error::Other(format!("building a tokio runtime: {e}")))?;
    // Install the handlers before starting anything: a signal that arrives during start-up
    // is then queued and handled right after, instead of killing us with the default action
    // (which PDEATHSIG would clean up, but without an orderly stop).
    let (mut term, mut int) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })
        .map_err(|e| testenv::Error::Other(format!("installing signal handlers: {e}")))?;

    let ready = state_dir.join("ready");
    // A marker from a previous run must not announce this one.
    let _ = std::fs::remove_file(&ready);

    let mut cp = testenv::ControlPlane::start(testenv::Options {
        kwok,
        state_dir: Some(state_dir),
        ..Default::default()
    })?;
    // The kubeconfig is at DIR/kubeconfig already; the marker says everything is ready.
    std::fs::write(&ready, format!("{}\n", cp.server_url()))
        .map_err(|e| testenv::Error::Other(format!("writing {}: {e}", ready.display())))?;
    println!("{}", cp.kubeconfig().display());
    eprintln!("testenv: control plane at {} ready; Ctrl-C to stop", cp.server_url());

    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    eprintln!("testenv: stopping");
    cp.stop();
    let _ = std::fs::remove_file(&ready);
    Ok(())
}
