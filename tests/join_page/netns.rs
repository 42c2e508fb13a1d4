//! Running the inner test in network and PID namespaces of its own (the pattern of
//! `tests/turn.rs`): the outer test re-runs this binary under `unshare`, the inner one refuses
//! to run unless it is somewhere new, then builds its network: `lo` and a veth pair with both
//! ends inside, carrying documentation addresses, and no route out.

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The host's network namespace, so the inner test can prove it is somewhere else.
pub const HOST_NETNS_ENV: &str = "CONCLAVE_JOIN_PAGE_HOST_NETNS";

/// Whether the CI variable is set (then a skip is a failure).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips loudly, or fails under CI.
pub fn skip(what: &str, why: &str) {
    let banner = "!".repeat(78);
    let msg = format!(
        "\n{banner}\n!! SKIPPED: {what}\n!! Nothing about the join page was checked.\n!! {}\n{banner}\n",
        why.trim().replace('\n', "\n!! ")
    );
    assert!(!ci(), "CI is set, so a skipped join-page test is a failure:{msg}");
    eprintln!("{msg}");
}

/// The command that runs a program in new network and PID namespaces, or why none can be made.
pub fn namespace_command() -> Result<Vec<&'static str>, String> {
    let mut errors = String::new();
    for cmd in [
        &["unshare", "--net", "--pid", "--fork", "--kill-child"][..],
        &["unshare", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"][..],
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

pub fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("read /proc/self/ns/net")
        .to_string_lossy()
        .into_owned()
}

/// Runs `test` of this binary inside new namespaces with `envs`, streaming its output, and
/// fails unless it passed.
pub fn run_inner(unshare: &[&str], test: &str, done: &str, envs: &[(&str, String)], timeout: Duration) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("--")
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env(HOST_NETNS_ENV, netns_id())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the inner test");
    let drain = |mut r: Box<dyn std::io::Read + Send>, echo: bool| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if echo {
                    // Progress as it happens: a browser test that hangs should show where.
                    eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                }
                all.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&all).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")), true);
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")), false);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the inner test") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the inner test did not finish within {timeout:?}:\n{}",
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
        stdout.contains(done) && stdout.contains("1 passed"),
        "the inner test {test:?} did not run (filter matched nothing?); its output is above"
    );
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

/// Panics unless this process is in a network namespace of its own that has only `lo`.
pub fn assert_isolated() {
    let host = std::env::var(HOST_NETNS_ENV).unwrap_or_default();
    let here = netns_id();
    assert!(
        !host.is_empty() && host != here,
        "refusing to run: not in a new network namespace (host {host:?}, here {here:?})"
    );
    assert_eq!(interfaces(), ["lo"], "refusing to run: the namespace must have only lo");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lo` up, and a veth pair with both ends inside: `a` on one end, `b` on the other, /24 each,
/// no default route. Waits until both addresses can be bound.
pub fn network_up(a: std::net::Ipv4Addr, b: std::net::Ipv4Addr) {
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "cv0", "type", "veth", "peer", "name", "cv1"]);
    ip(&["addr", "add", &format!("{a}/24"), "dev", "cv0"]);
    ip(&["addr", "add", &format!("{b}/24"), "dev", "cv1"]);
    ip(&["link", "set", "cv0", "up"]);
    ip(&["link", "set", "cv1", "up"]);
    let routes = Command::new("ip")
        .args(["route", "show", "default"])
        .output()
        .expect("ip route");
    assert!(
        String::from_utf8_lossy(&routes.stdout).trim().is_empty(),
        "a default route exists in the test namespace"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = [a, b, std::net::Ipv4Addr::LOCALHOST]
            .iter()
            .all(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{a} and {b} did not become usable");
        std::thread::sleep(Duration::from_millis(50));
    }
}
