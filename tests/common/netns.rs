//! Running a test inside network, PID and mount namespaces of its own: one implementation for
//! every test that starts something able to relay (included by path where needed).
//!
//! The outer test re-runs its own test binary, filtered to one inner test, under
//! `unshare --net --pid --mount --fork --kill-child`: the inner test sees only a fresh `lo`, nothing it
//! starts can reach another machine (the namespace has no route out), and the PID namespace
//! takes every server it started down with it however it ends. The inner test refuses to run
//! unless it is in such a namespace. Where no namespace can be made, the outer test fails
//! under `CI` and skips loudly otherwise.

// Each test binary that includes this uses a part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` by the outer test for the inner one.
const INNER_ENV: &str = "CONCLAVE_NETNS_INNER";
/// The outer test's network namespace, so the inner one can prove it is elsewhere.
const HOST_NETNS_ENV: &str = "CONCLAVE_NETNS_HOST";

/// How the outer test asks for its inner test to be run.
pub struct Outer<'a> {
    /// The inner test's name (run with `--exact`).
    pub inner: &'a str,
    /// A line the inner test prints when every check ran.
    pub done: &'a str,
    /// What the skip banner says was not checked.
    pub what: &'a str,
    pub timeout: Duration,
    pub env: Vec<(&'a str, OsString)>,
}

/// Whether this process is the inner test, started by [`Outer::run`].
pub fn is_inner() -> bool {
    std::env::var(INNER_ENV).as_deref() == Ok("1")
}

/// Whether the CI variable is set (then a skip is a failure).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips loudly: `what` could not be checked, and why. Fails instead under `CI`.
pub fn skip(what: &str, why: &str) {
    let banner = "!".repeat(78);
    let msg = format!(
        "\n{banner}\n!! SKIPPED: {what}\n!! {}\n{banner}\n",
        why.trim().replace('\n', "\n!! ")
    );
    assert!(!ci(), "CI is set, so a skipped test is a failure:{msg}");
    eprintln!("{msg}");
}

/// Polls `f` until it returns something or `timeout` passes; the condition is what is waited
/// for, the pause only keeps the poll from spinning.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command that makes new network and PID namespaces, or why none can be made.
fn namespace_command() -> Result<Vec<&'static str>, String> {
    let mut errors = String::new();
    for cmd in [
        &["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child"][..],
        &[
            "unshare",
            "--map-root-user",
            "--net",
            "--pid",
            "--mount",
            "--fork",
            "--kill-child",
        ][..],
    ] {
        match Command::new(cmd[0]).args(&cmd[1..]).arg("true").output() {
            Ok(out) if out.status.success() => return Ok(cmd.to_vec()),
            Ok(out) => {
                let _ = writeln!(
                    errors,
                    "{}: {} {}",
                    cmd.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Err(e) => {
                let _ = writeln!(errors, "{}: {e}", cmd.join(" "));
            }
        }
    }
    Err(errors)
}

fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("read /proc/self/ns/net")
        .to_string_lossy()
        .into_owned()
}

impl Outer<'_> {
    /// Runs the inner test in new namespaces and asserts that it passed and finished. Returns
    /// false when no namespace could be made and the test skipped (never under `CI`).
    pub fn run(self) -> bool {
        let unshare = match namespace_command() {
            Ok(cmd) => cmd,
            Err(why) => {
                skip(
                    &format!(
                        "{} needs a network namespace and none could be created; nothing about {} was checked.",
                        self.inner, self.what
                    ),
                    &why,
                );
                return false;
            }
        };
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(unshare[0])
            .args(&unshare[1..])
            .arg("--")
            .arg(&exe)
            .args([
                self.inner,
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(INNER_ENV, "1")
            .env(HOST_NETNS_ENV, netns_id())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the inner test");
        // stdout is echoed as it comes (a test that hangs shows where); stderr when it ends.
        let drain = |mut r: Box<dyn std::io::Read + Send>, echo: bool| {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if echo {
                        print!("{}", String::from_utf8_lossy(&buf[..n]));
                    }
                    all.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&all).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")), true);
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")), false);
        let status = wait_until(self.timeout, || child.try_wait().expect("wait for the inner test"));
        let Some(status) = status else {
            // Killing unshare with --kill-child takes the whole namespace down.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the inner test did not finish within {:?} (its output is above):\n{}",
                self.timeout,
                stderr.join().unwrap_or_default()
            );
        };
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        eprintln!("---- inner test stderr ----\n{stderr}");
        assert!(
            status.success(),
            "the inner test failed ({status}); its output is above"
        );
        assert!(
            stdout.contains(self.done) && stdout.contains("1 passed"),
            "the inner test {:?} did not run (filter matched nothing?); its output is above",
            self.inner
        );
        true
    }
}

/// Interface names in this process's network namespace.
fn interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("read /proc/self/net/dev");
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `names` resolve to `ip` for every program the inner test starts, as cluster DNS would:
/// a hosts file bind-mounted over `/etc/hosts` in the test's own mount namespace (private, as
/// `unshare --mount` makes it), so the host's file is untouched.
pub fn hosts(dir: &std::path::Path, ip: Ipv4Addr, names: &[String]) {
    assert!(is_inner(), "refusing to mount outside the test's own namespaces");
    let file = dir.join("hosts");
    let text = format!("127.0.0.1 localhost\n{ip} {}\n", names.join(" "));
    std::fs::write(&file, text).expect("write the hosts file");
    let out = Command::new("mount")
        .args(["--bind", &file.to_string_lossy(), "/etc/hosts"])
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "bind-mount the hosts file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Panics unless this is the inner test, in a network namespace other than the outer test's,
/// which has only `lo`.
fn assert_isolated() {
    assert!(
        is_inner(),
        "refusing to run outside the namespace the outer test creates"
    );
    let host = std::env::var(HOST_NETNS_ENV).unwrap_or_default();
    let here = netns_id();
    assert!(
        !host.is_empty() && host != here,
        "refusing to run: not in a new network namespace (host {host:?}, here {here:?})"
    );
    assert_eq!(
        interfaces(),
        ["lo"],
        "refusing to run: the namespace must start with only lo"
    );
}

/// The inner test's world when loopback is enough: checks it is in a fresh namespace, brings
/// `lo` up and returns once 127.0.0.1 and ::1 can be bound.
pub fn enter_loopback() {
    assert_isolated();
    ip(&["link", "set", "lo", "up"]);
    let usable = wait_until(Duration::from_secs(10), || {
        let v4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).is_ok();
        let v6 = UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok();
        (v4 && v6).then_some(())
    });
    assert!(
        usable.is_some(),
        "127.0.0.1 and ::1 are not usable after ip link set lo up (IPv6 disabled?)"
    );
}

/// The inner test's world: checks it is in a fresh namespace (only `lo`, not the host's),
/// brings `lo` up and adds a veth pair with both ends inside, `addrs[0]` on one end and
/// `addrs[1]` on the other, both in one /24 and neither with a route anywhere else. Returns
/// once both addresses can be bound.
pub fn enter(addrs: [Ipv4Addr; 2]) {
    assert_isolated();
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "cv0", "type", "veth", "peer", "name", "cv1"]);
    for (dev, addr) in ["cv0", "cv1"].iter().zip(addrs) {
        ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
        ip(&["link", "set", dev, "up"]);
    }
    let routes = ip(&["-4", "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "the namespace must have no default route: {routes}"
    );
    let usable = wait_until(Duration::from_secs(10), || {
        addrs.iter().all(|a| UdpSocket::bind((*a, 0)).is_ok()).then_some(())
    });
    assert!(usable.is_some(), "{addrs:?} never became usable:\n{}", ip(&["addr"]));
}
