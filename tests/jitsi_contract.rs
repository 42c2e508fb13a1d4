//! The Jitsi containers' contract: what the operator renders is what the images and their real
//! programs need (issue 10).
//!
//! For a matrix of Bridges (`jitsi_contract/cases.rs`) the operator's own planning and builders
//! produce each Jitsi pod; each image's init script from docker-jitsi-meet `stable-11146-2` (the
//! images the operator pins) then runs unchanged, in a file system laid out as the image and the
//! pod's volumes make it, and renders its configuration with the real `tpl`. What it writes goes
//! to the real consumers:
//!
//! - web: Debian's nginx serves on it in a network namespace of the test's own, with a stand-in
//!   prosody that only a DNS stub answering fully-qualified cluster names leads to (as CoreDNS
//!   does for nginx's resolver); BOSH, the XMPP websocket and `config.js` are requested, and
//!   node evaluates `config.js`. nginx starts a second time on a kernel without IPv6 (seccomp).
//! - prosody: `luac5.4 -p`, `prosodyctl check config` and prosody's own config loader; then
//!   Debian's prosody itself starts on it (without the image's jitsi-meet and contrib plugins,
//!   which no package here provides) and must answer BOSH and the websocket, on a kernel with
//!   and without IPv6.
//! - jicofo and the videobridges: Lightbend Config, the HOCON library both read their files with.
//!
//! Each check is its own test. Checks that the current operator fails are listed in
//! [`EXPECTED_FAILURES`] with the finding and a fragment of the failure they must show:
//! they still run, and the test fails when one stops failing (remove it from the list then) or
//! fails differently. `CONCLAVE_CONTRACT_STRICT=1` reports them as plain failures, and
//! `CONCLAVE_CONTRACT_OBSERVATIONS=<file>` saves everything the run saw (rendered files,
//! replies, logs) as JSON.
//!
//! Everything runs in one inner process in new network, mount and PID namespaces (the outer
//! test re-runs this binary under `unshare`); it refuses to run anywhere else. Without the
//! tools (`tests/tools/build.sh --jitsi`, Debian's nginx, prosody, lua5.4, node, a JDK) or
//! without namespaces the test skips loudly, and fails under `CI`.

#[path = "jitsi_contract/mod.rs"]
mod jitsi;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jitsi::observe::Observations;
use jitsi::{checks, observe, tools};

/// Checks the current operator fails: (check, finding of issue 10, fragment of the failure).
const EXPECTED_FAILURES: &[(&str, &str, &str)] = &[];

const INNER: &str = "inner_run";
const INNER_ENV: &str = "CONCLAVE_CONTRACT_INNER";
const WORK_ENV: &str = "CONCLAVE_CONTRACT_WORK";
const TOOLS_ENV: &str = "CONCLAVE_CONTRACT_TOOLS";
const HOST_NS_ENV: &str = "CONCLAVE_CONTRACT_HOST_NS";
/// Where to save everything the run saw (rendered files, replies, logs) as JSON, for a look.
const SAVE_ENV: &str = "CONCLAVE_CONTRACT_OBSERVATIONS";
const DONE: &str = "conclave-jitsi-contract: every case ran";
const INNER_DEADLINE: Duration = Duration::from_secs(900);

fn ns_id(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("read /proc/self/ns")
        .to_string_lossy()
        .into_owned()
}

fn host_namespaces() -> String {
    format!("{} {}", ns_id("net"), ns_id("mnt"))
}

/// `unshare` with new network, mount and PID namespaces, or why none can be made. Real root is
/// needed: the run mounts, `chroot`s and switches to the images' uid 1000.
fn unshare() -> Result<Vec<&'static str>, String> {
    if !jitsi::container::real_root() {
        return Err(
            "the Jitsi contract test must run as root (it mounts, chroots and runs the images' \
                    processes as uid 1000, all inside namespaces of its own)"
                .into(),
        );
    }
    let cmd = vec!["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child"];
    match Command::new(cmd[0]).args(&cmd[1..]).arg("true").output() {
        Ok(out) if out.status.success() => Ok(cmd),
        Ok(out) => Err(format!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", cmd.join(" "))),
    }
}

/// Whether anything is still mounted under `dir` in this namespace (never true when the inner
/// run stayed in its own mount namespace; checked before anything there is deleted).
fn mounted_under(dir: &Path) -> bool {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)))
        })
        .unwrap_or(true)
}

fn run_inner() -> Result<Observations, String> {
    let tools = tools::find()?;
    let unshare = unshare().map_err(|e| format!("no network/mount/PID namespace can be created:\n{e}"))?;
    let work = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("--")
        .arg(&exe)
        .args([INNER, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"])
        .env(INNER_ENV, "1")
        .env(WORK_ENV, work.path())
        .env(TOOLS_ENV, serde_json::to_string(&tools).expect("json"))
        .env(HOST_NS_ENV, host_namespaces())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the inner run");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + INNER_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the inner run") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let observed = std::fs::read_to_string(work.path().join("observations.json"));
    if mounted_under(work.path()) {
        let kept = work.keep();
        panic!(
            "mounts leaked out of the inner run under {}; left in place",
            kept.display()
        );
    }
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains(DONE),
        "the inner run failed ({status:?}):\n{stdout}\n{stderr}"
    );
    let observed = observed.expect("the inner run wrote its observations");
    if let Ok(copy) = std::env::var(SAVE_ENV) {
        std::fs::write(&copy, &observed).unwrap_or_else(|e| panic!("{SAVE_ENV}={copy}: {e}"));
    }
    Ok(serde_json::from_str(&observed).expect("observations"))
}

/// The observations of the one inner run, shared by every check; `None` when it cannot run.
fn observations() -> Option<&'static Observations> {
    static RUN: OnceLock<Result<Observations, String>> = OnceLock::new();
    match RUN.get_or_init(run_inner) {
        Ok(o) => Some(o),
        Err(why) => {
            tools::unavailable(why);
            None
        }
    }
}

fn strict() -> bool {
    std::env::var("CONCLAVE_CONTRACT_STRICT").is_ok_and(|v| v == "1")
}

/// Runs check `name` and judges it against [`EXPECTED_FAILURES`].
fn contract(name: &str) {
    let Some(obs) = observations() else { return };
    let check = checks::all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check {name}"))
        .1;
    let expected = EXPECTED_FAILURES.iter().find(|(n, _, _)| *n == name);
    match (check(obs), expected) {
        (Ok(()), None) => {}
        (Err(e), None) => panic!("contract check {name} failed:\n{e}"),
        (Ok(()), Some((_, finding, _))) => {
            panic!("contract check {name} (issue 10, finding {finding}) passes now: remove it from EXPECTED_FAILURES")
        }
        (Err(e), Some((_, finding, fragment))) => {
            assert!(!strict(), "contract check {name} fails (finding {finding}):\n{e}");
            assert!(
                e.contains(fragment),
                "contract check {name} fails, but not with {fragment:?} as expected (finding {finding}):\n{e}"
            );
            eprintln!("EXPECTED FAILURE (issue 10, finding {finding}, fixed in phase 2): {name}\n{e}\n");
        }
    }
}

#[test]
fn every_check_has_a_test_and_every_expected_failure_a_check() {
    let names: Vec<&str> = checks::all().into_iter().map(|(n, _)| n).collect();
    let source = include_str!("jitsi_contract.rs");
    for n in &names {
        assert!(
            source.contains(&format!("\n    {n},\n")),
            "no #[test] for check {n} in contract_tests!"
        );
    }
    for (n, _, _) in EXPECTED_FAILURES {
        assert!(names.contains(n), "EXPECTED_FAILURES names {n}, which is no check");
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                contract(stringify!($name));
            }
        )*
    };
}

contract_tests!(
    init_scripts_succeed,
    web_nginx_loads_the_rendered_files_unchanged,
    web_bosh_reaches_prosody,
    web_websocket_reaches_prosody,
    web_config_js_connects_to_the_bridge,
    web_e2ee_available,
    web_e2ee_encoded_transform_on,
    web_recording_and_streaming_off,
    web_transcription_off_keeps_image_settings,
    web_local_recording_off,
    web_no_third_party_requests,
    web_starts_without_ipv6,
    prosody_config_loads,
    prosody_hosts_and_components,
    prosody_token_authentication,
    prosody_modules_enabled,
    prosody_plugin_paths,
    prosody_turn_at_turn_address,
    prosody_stun_announced,
    prosody_serves_bosh_and_websocket,
    prosody_loads_the_operators_module,
    prosody_starts_without_ipv6,
    prosody_listens_ipv4_only,
    jicofo_config,
    jvb_config,
    jvb_private_candidates_off,
    jvb_can_bind_its_media_port,
    turn_relays_to_own_sfu_endpoints,
    env_every_variable_is_read,
);

/// Panics unless this process is in network and mount namespaces of its own, the network one
/// with nothing but `lo`.
fn assert_isolated() {
    let host = std::env::var(HOST_NS_ENV).unwrap_or_default();
    let (net, mnt) = (ns_id("net"), ns_id("mnt"));
    assert!(
        !host.is_empty() && !host.contains(&net) && !host.contains(&mnt),
        "refusing to run: not in new namespaces (host {host:?}, here {net} {mnt})"
    );
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("read /proc/self/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "refusing to run: the namespace must start with only lo");
}

#[test]
#[ignore = "runs only inside the namespaces the contract checks create"]
fn inner_run() {
    if std::env::var(INNER_ENV).as_deref() != Ok("1") {
        eprintln!("{INNER} runs only under the contract checks, in namespaces of its own; not running it here");
        return;
    }
    assert_isolated();
    let tools: tools::Tools = serde_json::from_str(&std::env::var(TOOLS_ENV).expect("tools")).expect("tools json");
    let work = std::path::PathBuf::from(std::env::var(WORK_ENV).expect("work dir"));
    let obs = observe::run(&tools, &work);
    std::fs::write(
        work.join("observations.json"),
        serde_json::to_string(&obs).expect("json"),
    )
    .expect("write");
    println!("{DONE}");
}
