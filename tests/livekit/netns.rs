//! Running a test inside network and PID namespaces of its own.
//!
//! The outer test re-runs its own test binary, filtered to one inner test, under
//! `unshare --net --pid --mount --fork --kill-child`: the inner test sees only a fresh `lo`, nothing it
//! starts can reach another machine (the namespace has no route out), and the PID namespace
//! takes every server it started down with it however it ends. The inner test refuses to run
//! unless it is in such a namespace. Where no namespace can be made, the outer test fails
//! under `CI` and skips loudly otherwise.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::wait_until;

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

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
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
                let banner = "!".repeat(78);
                let msg = format!(
                    "\n{banner}\n!! SKIPPED: {} needs a network namespace and none could be created.\n\
                     !! Nothing about {} was checked.\n!! {}\n{banner}\n",
                    self.inner,
                    self.what,
                    why.trim().replace('\n', "\n!! ")
                );
                assert!(
                    !ci(),
                    "CI is set, so a skipped network-namespace test is a failure:{msg}"
                );
                eprintln!("{msg}");
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
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        let status = wait_until(self.timeout, || child.try_wait().expect("wait for the inner test"));
        let Some(status) = status else {
            // Killing unshare with --kill-child takes the whole namespace down.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the inner test did not finish within {:?}:\n{}\n{}",
                self.timeout,
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        };
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        println!("---- inner test (in a network namespace) stdout ----\n{stdout}");
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

/// The inner test's world: checks it is in a fresh namespace (only `lo`, not the host's),
/// brings `lo` up and adds a veth pair with both ends inside, `addrs[0]` on one end and
/// `addrs[1]` on the other, both in one /24 and neither with a route anywhere else. Returns
/// once both addresses can be bound.
pub fn enter(addrs: [Ipv4Addr; 2]) {
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
