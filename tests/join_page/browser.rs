//! The Rust end of `web/test/driver.mjs`: one JSON command per line, one answer per line, each
//! with a deadline. Waiting is polling the page's `window.conclave` until a condition holds.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One command's deadline (a page load under a busy CPU included).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl Driver {
    pub fn start(node: &Path, script: &Path, log: &Path) -> Driver {
        let stderr = std::fs::File::create(log).expect("driver log");
        let mut child = Command::new(node)
            .arg(script)
            .current_dir(script.parent().and_then(Path::parent).expect("web/"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the puppeteer driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver { child, stdin, answers }
    }

    /// Sends a command and returns its `ok` value, or the driver's error.
    pub fn try_call(&mut self, cmd: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").map_err(|e| format!("driver stdin: {e}"))?;
        let line = match self.answers.recv_timeout(CALL_TIMEOUT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => return Err(format!("no answer to {cmd} within {CALL_TIMEOUT:?}")),
            Err(RecvTimeoutError::Disconnected) => return Err("the driver exited".into()),
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("driver said {line:?}: {e}"))?;
        match v.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(v.get("ok").cloned().unwrap_or(Value::Null)),
        }
    }

    pub fn call(&mut self, cmd: Value) -> Value {
        let shown = cmd["cmd"].clone();
        self.try_call(cmd).unwrap_or_else(|e| panic!("driver {shown}: {e}"))
    }

    pub fn eval(&mut self, id: &str, expr: &str) -> Value {
        self.call(json!({"cmd": "eval", "id": id, "expr": expr}))
    }

    pub fn snapshot(&mut self, id: &str) -> Value {
        self.eval(id, "window.conclave ? window.conclave.snapshot() : null")
    }

    pub fn stats(&mut self, id: &str) -> Value {
        self.eval(id, "window.conclave.stats()")
    }

    pub fn click(&mut self, id: &str, selector: &str) {
        self.call(json!({"cmd": "click", "id": id, "selector": selector}));
    }

    pub fn screenshot(&mut self, id: &str, path: &Path) {
        self.call(json!({"cmd": "screenshot", "id": id, "path": path}));
    }

    /// Polls `probe` every 250ms until `done` accepts its value; panics with the last value
    /// after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut Driver) -> Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = probe(self);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last seen:\n{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until page `id` reaches `state`; panics early if it ends in another final state.
    pub fn wait_state(&mut self, id: &str, state: &str, timeout: Duration) -> Value {
        self.wait_for(
            &format!("{id} to be {state}"),
            timeout,
            |d| d.snapshot(id),
            |s| {
                let now = s["state"].as_str().unwrap_or_default();
                let final_states = ["failed", "ended", "denied", "removed", "left", "needs-link"];
                assert!(
                    now == state || !final_states.contains(&now),
                    "{id} is {now} while waiting for {state}: {}",
                    serde_json::to_string_pretty(s).unwrap_or_default()
                );
                now == state
            },
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
