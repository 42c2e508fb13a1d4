//! Process lifetime: no component outlives `stop()`, the `testenv up` binary, or (via
//! PDEATHSIG) a killed parent; and components survive the exit of the thread that started
//! them.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls a synchronous condition until it holds or panics with `what` (no fixed sleeps:
/// the loop ends as soon as the condition is true).
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The state letter from /proc/<pid>/stat, or None if the process does not exist.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." — comm may contain spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Direct children of `parent`, found by scanning /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn owned_control_plane_survives_its_starting_thread_and_stops_completely() {
    // A state directory left by a SIGKILLed run (its owner pid is dead) is swept on start;
    // one without an owner file is not ours and stays. TempDirs clean up even on failure.
    let in_tmp = |prefix: &str| tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let stale = in_tmp("conclave-testenv-stale-");
    let foreign = in_tmp("conclave-testenv-foreign-");
    std::fs::create_dir(stale.path().join("etcd")).unwrap();
    // pid_max is at most 2^22, so this pid cannot exist.
    std::fs::write(stale.path().join("owner"), "4194305 12345").unwrap();

    // Start from a thread that then exits: with PDEATHSIG armed on the forking thread this
    // would kill everything, unless forks happen on the harness's long-lived spawner thread.
    let mut cp = std::thread::spawn(|| testenv::ControlPlane::start(testenv::Options::default()).unwrap())
        .join()
        .unwrap();

    assert!(!stale.path().exists(), "stale state directory was not swept");
    assert!(foreign.path().exists(), "a directory without owner file was removed");

    let pids = cp.pids();
    assert_eq!(
        pids.len(),
        5,
        "etcd, apiserver, controller-manager, scheduler, kwok: {pids:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = cp.client().await;
        Api::<Namespace>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap();
    });
    for pid in &pids {
        assert!(
            matches!(proc_state(*pid), Some(s) if s != 'Z'),
            "pid {pid} died with its starting thread"
        );
    }
    let api_port = port_of(cp.server_url());
    assert!(TcpStream::connect(("127.0.0.1", api_port)).is_ok());

    cp.stop();
    for pid in &pids {
        assert!(gone(*pid), "pid {pid} still exists after stop()");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", api_port)).is_err(),
        "API server port {api_port} still accepts connections"
    );
    cp.stop(); // idempotent

    // Dropping removes the temporary state directory.
    let dir = cp.state_dir().to_path_buf();
    assert!(dir.exists());
    drop(cp);
    assert!(!dir.exists(), "{} not removed on drop", dir.display());
}

/// Spawns `testenv up` and waits for its ready marker; returns it and its children.
fn testenv_up(dir: &Path) -> (Child, Vec<u32>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testenv"));
    cmd.arg("up")
        .arg("--state-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // If this test binary dies mid-test, take testenv (and so, by its own PDEATHSIG, the
    // control plane) with it. The forking thread is this test's thread, which lives exactly
    // as long as the test.
    // SAFETY: only prctl(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    wait_until("testenv up to write its ready file", START_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("testenv up exited early with {status}");
        }
        dir.join("ready").exists()
    });
    assert!(dir.join("kubeconfig").is_file());
    let children = children_of(child.id());
    // etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.
    assert_eq!(children.len(), 5, "children of testenv up: {children:?}");
    (child, children)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn testenv_up_stops_all_children_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, children) = testenv_up(dir.path());

    // It prints the kubeconfig path once ready (the line is complete: ready is written first).
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), dir.path().join("kubeconfig").to_str().unwrap());

    signal(&child, libc::SIGTERM);
    let mut status = None;
    wait_until("testenv up to exit after SIGTERM", Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "exit status {status:?}");
    // testenv reaped them itself, so they are gone rather than zombies.
    for pid in children {
        assert!(gone(pid), "child {pid} survived testenv up");
    }
    assert!(!dir.path().join("ready").exists(), "ready marker left behind");
}

#[test]
fn children_die_when_testenv_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, children) = testenv_up(dir.path());

    // SIGKILL: no handler runs, only the kernel's PDEATHSIG can stop the children.
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    wait_until(
        "all children of the killed testenv to die",
        Duration::from_secs(10),
        || {
            // Orphans are reaped by whichever process adopts them; until then they are zombies.
            children.iter().all(|pid| matches!(proc_state(*pid), None | Some('Z')))
        },
    );
}
