//! Long-running programs under test: output into a log file, readiness awaited with a
//! deadline (failing at once, with the log, if the program exits instead), killed on drop. One
//! implementation for every test that starts real servers (included by path where needed).

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout and stderr in `<dir>/<name>.log`.
    pub fn start(name: &str, mut cmd: Command, dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({:?}): {e}", cmd.get_program()));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Panics with the log if the program has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll child") {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits until `ready` holds, failing with the log if the program exits or `timeout`
    /// passes first.
    pub fn wait_ready(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} not within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            // The condition is what is waited for; the pause only keeps the poll from spinning.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a TCP connection to `addr` succeeds.
    pub fn wait_tcp(&mut self, addr: SocketAddr, timeout: Duration) {
        self.wait_ready(&format!("accepting connections on {addr}"), timeout, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// Waits until `GET path` on `addr` answers 200.
    pub fn wait_http_ok(&mut self, addr: SocketAddr, path: &str, timeout: Duration) {
        self.wait_ready(&format!("GET http://{addr}{path} answering 200"), timeout, || {
            http_get(addr, path).is_some_and(|(status, _)| status == 200)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET: the status code and body, or `None` when nothing answered.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Sends `PING` to Redis at `addr`, after `AUTH` when a password is given, and returns the
/// last reply line (`+PONG`, or an error such as `-NOAUTH ...`).
pub fn redis_ping(addr: SocketAddr, password: Option<&str>) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut request = String::new();
    let mut replies = 1;
    if let Some(p) = password {
        request.push_str(&format!("AUTH {p}\r\n"));
        replies += 1;
    }
    request.push_str("PING\r\n");
    s.write_all(request.as_bytes()).expect("write to redis");
    let mut lines = Vec::new();
    let mut reader = std::io::BufReader::new(s);
    for _ in 0..replies {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
            break;
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.last().cloned().unwrap_or_default()
}
