//! The operator as a child process, the one way every integration test runs it: authenticated
//! as its own user (so the audit log tells its requests apart) or with a given kubeconfig,
//! health and metrics on a free port, killed on drop. Its log lines are collected.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child as Process, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use testenv::wait_for;

use super::cluster;

pub struct Operator {
    process: Process,
    lines: Arc<Mutex<Vec<String>>>,
    /// The file the operator reads "now" from, when started with a controlled clock.
    clock: Option<PathBuf>,
    /// The user it authenticates as (also the tag of its log lines).
    pub user: String,
}

impl Operator {
    /// An operator with the system clock, watching only `namespace` so tests running at the
    /// same time never reconcile each other's objects.
    pub fn start(user: &str, namespace: &str) -> Operator {
        Operator::launch(user, None, &["--watch-namespace", namespace], &[], None)
    }

    /// Like [`Operator::start`], with a clock the test sets with [`Operator::set_now`].
    pub fn with_clock(user: &str, namespace: &str, dir: &Path, now: DateTime<Utc>) -> Operator {
        let path = dir.join(format!("{user}.now"));
        write_clock(&path, now);
        Operator::launch(user, None, &["--watch-namespace", namespace], &[], Some(path))
    }

    /// `conclave run` with `args` and `env`, as `user` in `system:masters`, or with
    /// `kubeconfig` when given (then `user` only tags the log lines).
    pub fn launch(
        user: &str,
        kubeconfig: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
        clock: Option<PathBuf>,
    ) -> Operator {
        let bin = Path::new(env!("CARGO_BIN_EXE_conclave"));
        Operator::spawn(bin, user, kubeconfig, args, env, clock, true)
    }

    /// The binary `bin` run like [`Operator::launch`] with a given kubeconfig, collecting the
    /// log without echoing it: for runs with tens of thousands of reconciles.
    pub fn quiet(bin: &Path, user: &str, kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Operator {
        Operator::spawn(bin, user, Some(kubeconfig), args, env, None, false)
    }

    fn spawn(
        bin: &Path,
        user: &str,
        kubeconfig: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
        clock: Option<PathBuf>,
        echo: bool,
    ) -> Operator {
        let kubeconfig = match kubeconfig {
            Some(path) => path.to_path_buf(),
            None => cluster().kubeconfig_as(user, &["system:masters"]),
        };
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--log-format", "text"])
            // Each operator gets its own free port for health and metrics.
            .args(["--http-address", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            // CONCLAVE_OPERATOR_LOG overrides the levels, to debug a test.
            .env(
                "RUST_LOG",
                std::env::var("CONCLAVE_OPERATOR_LOG").unwrap_or_else(|_| "info,conclave=debug,kube=warn".into()),
            )
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = &clock {
            cmd.env("CONCLAVE_CLOCK_FILE", path);
        }
        let mut process = cmd.spawn().expect("operator starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipes: Vec<Box<dyn Read + Send>> = [
            process.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            process.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pipe in pipes {
            let (lines, tag) = (lines.clone(), user.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{tag}] {line}");
                    }
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

    /// Log lines containing `needle`, ignoring case.
    pub fn lines_containing(&self, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase();
        self.lines
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.to_lowercase().contains(&needle))
            .cloned()
            .collect()
    }

    /// Every log line, for privacy assertions.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("{} to log {needle:?}", self.user), timeout, || {
            let n = self.log_count(&[needle]);
            async move { (n > 0).then_some(()) }
        })
        .await;
    }

    /// The port the operator's HTTP server bound, from its log.
    pub async fn http_port(&self) -> u16 {
        const PREFIX: &str = "serving http on 127.0.0.1:";
        wait_for(
            &format!("{} to log its http address", self.user),
            Duration::from_secs(30),
            || {
                let port = self.lines.lock().expect("log lock").iter().find_map(|l| {
                    let rest = &l[l.find(PREFIX)? + PREFIX.len()..];
                    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
                });
                async move { port }
            },
        )
        .await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, port: u16) {
        wait_for(
            &format!("{} /readyz to answer 200", self.user),
            Duration::from_secs(60),
            || async { (http_get(port, "/readyz").ok()?.0 == 200).then_some(()) },
        )
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Asks the operator to stop, as Kubernetes does.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.process.id());
    }

    /// Kills the operator at once, as a crashed node would.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let process = &mut self.process;
        let user = self.user.clone();
        wait_for(&format!("{user} to exit"), timeout, || {
            let status = process.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    /// Write requests this operator sent, as `verb URI`, from the audit log.
    pub fn writes(&self) -> Vec<String> {
        writes_by(&cluster().audit_events(), &self.user)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
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

/// A plain HTTP/1.1 GET on loopback: status code and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn write_clock(path: &Path, now: DateTime<Utc>) {
    // Written to a temporary file and renamed, so the operator never reads half a timestamp.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, now.to_rfc3339()).expect("write clock");
    std::fs::rename(&tmp, path).expect("install clock");
}
