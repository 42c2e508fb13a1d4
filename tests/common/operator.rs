//! The operator as a child process, authenticated as its own user so the audit log tells its
//! requests apart; killed on drop. Its log lines are collected for assertions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child as Process, Command, Stdio};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::cluster;

pub struct Operator {
    process: Process,
    lines: Arc<Mutex<Vec<String>>>,
    /// The file the operator reads "now" from, when started with a controlled clock.
    clock: Option<PathBuf>,
    pub user: String,
}

impl Operator {
    /// An operator with the system clock, watching only `namespace` so tests running at the
    /// same time never reconcile each other's objects.
    pub fn start(user: &str, namespace: &str) -> Operator {
        Operator::spawn(user, namespace, None)
    }

    /// An operator whose clock the test sets with [`Operator::set_now`], starting at `now`.
    pub fn with_clock(user: &str, namespace: &str, dir: &Path, now: DateTime<Utc>) -> Operator {
        let path = dir.join(format!("{user}.now"));
        write_clock(&path, now);
        Operator::spawn(user, namespace, Some(path))
    }

    fn spawn(user: &str, namespace: &str, clock: Option<PathBuf>) -> Operator {
        let cp = cluster();
        let kubeconfig = cp.kubeconfig_as(user, &["system:masters"]);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
        cmd.args(["run", "--log-format", "text", "--watch-namespace", namespace])
            // Each test's operator gets its own free port for health and metrics.
            .args(["--http-address", "127.0.0.1:0"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,conclave=debug,kube=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &clock {
            cmd.env("CONCLAVE_CLOCK_FILE", path);
        }
        let mut process = cmd.spawn().expect("operator starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipes: Vec<Box<dyn std::io::Read + Send>> = [
            process
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            process
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pipe in pipes {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[operator] {line}");
                    lines.lock().expect("log lock").push(line);
                }
            });
        }
        Operator {
            process,
            lines,
            clock,
            user: user.to_string(),
        }
    }

    /// Moves the operator's clock. It takes effect at the operator's next reconcile.
    pub fn set_now(&self, now: DateTime<Utc>) {
        let path = self.clock.as_ref().expect("operator started with a controlled clock");
        write_clock(path, now);
    }

    /// Log lines containing every one of `needles`.
    pub fn log_count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Every log line, for privacy assertions.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// Write requests this operator sent, as `verb URI`, from the audit log.
    pub fn writes(&self) -> Vec<String> {
        writes_by(&cluster().audit_events(), &self.user)
    }
}

/// Write requests (`create`, `update`, `patch`, `delete`) by `user`, as `verb URI`.
pub fn writes_by(events: &[serde_json::Value], user: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["user"]["username"] == user)
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

fn write_clock(path: &Path, now: DateTime<Utc>) {
    // Written to a temporary file and renamed, so the operator never reads half a timestamp.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, now.to_rfc3339()).expect("write clock");
    std::fs::rename(&tmp, path).expect("install clock");
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
