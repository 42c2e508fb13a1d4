//! The inner run: for every case, the operator's pods are started as far as a test can start
//! them (each image's init script in its own file system, then nginx, prosodyctl, Lua, the HOCON
//! parser and node on what the scripts wrote), and everything seen is recorded for the checks.
//! Runs only inside the test's own network, mount and PID namespaces.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::cases::{self, Case};
use super::container::{self, Root, Start};
use super::http::{self, Reply};
use super::operator::{self, Output, Pod};
use super::tools::Tools;
use super::web::{self, WebRun};

/// The cluster DNS Service address in the simulated pod's resolv.conf.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// prosody's Service (ClusterIP) address, known only to the DNS stub.
pub const PROSODY_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

/// An image's init script and what it wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Init {
    pub pod: String,
    pub image: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Text files under `/run/<image>/config`, by path in the container.
    pub files: BTreeMap<String, String>,
}

/// prosody's configuration, checked by Lua, prosodyctl and prosody's own config loader.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Prosody {
    /// `luac5.4 -p` per file: (file, error output, empty when it compiles).
    pub luac: Vec<(String, String)>,
    pub check_status: Option<i32>,
    pub check_output: String,
    /// Every host's options as prosody loads them; `*` holds the global ones.
    pub config: Option<serde_json::Value>,
    pub load_error: String,
    /// Debian's prosody started by the image's run script on the rendered configuration (the
    /// image's jitsi-meet and contrib plugins are not here, see the report), and its answers.
    pub start: Start,
    pub bosh: Reply,
    pub websocket: Reply,
    /// The same on a kernel without IPv6.
    pub without_ipv6: Start,
    pub without_ipv6_bosh: Reply,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseRun {
    pub id: String,
    pub output: Output,
    pub inits: Vec<Init>,
    pub web: WebRun,
    pub prosody: Prosody,
    /// jicofo's and each videobridge's HOCON as Lightbend Config reads it, by pod name.
    pub hocon: BTreeMap<String, Result<serde_json::Value, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Observations {
    /// The docker-jitsi-meet sources the run used.
    pub djm: PathBuf,
    pub cases: Vec<CaseRun>,
    pub versions: BTreeMap<String, String>,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace's network: loopback with the DNS and prosody Service addresses, and a pod
/// interface (a veth pair with both ends here) whose address `ip route get` reports, as in a pod.
fn network() {
    let ip = |args: &str| sh(Command::new("ip").args(args.split_whitespace()));
    ip("link set lo up");
    ip(&format!("addr add {DNS_IP}/32 dev lo"));
    ip(&format!("addr add {PROSODY_IP}/32 dev lo"));
    ip("link add eth0 type veth peer name gw0");
    ip(&format!("addr add {}/24 dev eth0", operator::POD_IP));
    ip("addr add 198.51.100.1/24 dev gw0");
    ip("link set eth0 up");
    ip("link set gw0 up");
    ip("route add default via 198.51.100.1 dev eth0");
}

/// What the kubelet writes into a pod's resolv.conf (ClusterFirst policy).
fn resolv_conf(work: &Path, case: &Case) -> PathBuf {
    let path = work.join(format!("{}-resolv.conf", case.id));
    let d = case.cluster.domain;
    let ns = &case.namespace;
    fs::write(
        &path,
        format!("search {ns}.svc.{d} svc.{d} {d}\nnameserver {DNS_IP}\noptions ndots:5\n"),
    )
    .expect("resolv.conf");
    path
}

fn text_files(root: &Root, dir: &str, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = fs::read_dir(root.path(dir)) else {
        return;
    };
    for e in entries.flatten() {
        let path = format!("{dir}/{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            if !path.ends_with("/certs") {
                text_files(root, &path, out);
            }
        } else if let Ok(text) = fs::read_to_string(e.path()) {
            out.insert(path, text);
        }
    }
}

fn init(root: &Root, pod: &Pod) -> Init {
    let out = root.init();
    let mut files = BTreeMap::new();
    text_files(root, &format!("/run/{}/config", pod.image), &mut files);
    Init {
        pod: pod.name.clone(),
        image: pod.image.clone(),
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        files,
    }
}

/// prosody's HTTP port (BOSH and the websocket), reached on loopback in its namespace.
const PROSODY_HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5280);
const PROSODY_RUN: &str = "/s6-overlay/scripts/prosody";

fn prosody(root: &Root, case: &Case) -> Prosody {
    let mut p = Prosody::default();
    let mut files = BTreeMap::new();
    text_files(root, "/run/prosody/config", &mut files);
    for path in files.keys().filter(|f| f.ends_with(".cfg.lua")) {
        let out = Command::new("luac5.4")
            .args(["-p", "-o", "/dev/null"])
            .arg(root.path(path))
            .output()
            .expect("luac5.4");
        p.luac
            .push((path.clone(), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let config = "/run/prosody/config/prosody.cfg.lua";
    let out = root
        .command(&["prosodyctl", "--config", config, "check", "config"])
        .output()
        .expect("prosodyctl");
    p.check_status = out.status.code();
    p.check_output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let loader = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jitsi_contract/prosody_config.lua");
    let out = Command::new("lua5.4")
        .arg(loader)
        .arg(root.path(config))
        .output()
        .expect("lua5.4");
    match serde_json::from_slice(&out.stdout) {
        Ok(v) if out.status.success() => p.config = Some(v),
        _ => p.load_error = String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    let domain = case.domain();
    let (server, start) = root.start(PROSODY_RUN, "/run/prosody.out", PROSODY_HTTP, false);
    p.start = start;
    if let Some(server) = server {
        p.bosh = http::get(PROSODY_HTTP, &domain, "/http-bind");
        p.websocket = http::websocket(PROSODY_HTTP, &domain, "/xmpp-websocket");
        drop(server);
        p.start.log = root.read("/run/prosody.out").unwrap_or_default();
    }
    let (server, start) = root.start(PROSODY_RUN, "/run/prosody-noipv6.out", PROSODY_HTTP, true);
    p.without_ipv6 = start;
    if let Some(server) = server {
        p.without_ipv6_bosh = http::get(PROSODY_HTTP, &domain, "/http-bind");
        drop(server);
        p.without_ipv6.log = root.read("/run/prosody-noipv6.out").unwrap_or_default();
    }
    p
}

/// Parses every file with Lightbend Config in one JVM; results by file.
fn hocon(tools: &Tools, files: &[PathBuf]) -> BTreeMap<PathBuf, Result<serde_json::Value, String>> {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jitsi_contract/HoconJson.java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(&tools.hocon)
        .arg(program)
        .args(files)
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "the HOCON parser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut results = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("HoconJson prints JSON");
        let file = PathBuf::from(v["file"].as_str().expect("file"));
        let r = match v.get("config") {
            Some(c) => Ok(c.clone()),
            None => Err(v["error"].as_str().unwrap_or_default().to_string()),
        };
        results.insert(file, r);
    }
    results
}

/// The first line of a program's output that `pick` accepts.
fn version(cmd: &[&str], pick: fn(&str) -> bool) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("version");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().find(|l| pick(l)).unwrap_or_default().trim().to_string()
}

/// Runs every case; `work` is a directory the outer test owns and removes.
pub fn run(tools: &Tools, work: &Path) -> Observations {
    network();
    let bin = container::image_bin(work, tools);
    let mut runs = Vec::new();
    let mut hocon_files: Vec<(usize, String, PathBuf)> = Vec::new();
    for case in cases::all() {
        let began = std::time::Instant::now();
        let output = operator::render(&case);
        let resolv = resolv_conf(work, &case);
        let mut inits = Vec::new();
        let mut web_run = None;
        let mut prosody_run = Prosody::default();
        for pod in &output.pods {
            let root = Root::assemble(work.join(case.id).join(&pod.name), tools, &bin, pod, &resolv);
            inits.push(init(&root, pod));
            match pod.image.as_str() {
                "web" => web_run = Some(web::run(&root, &case)),
                "prosody" => prosody_run = prosody(&root, &case),
                "jicofo" => hocon_files.push((
                    runs.len(),
                    pod.name.clone(),
                    root.path("/run/jicofo/config/jicofo.conf"),
                )),
                "jvb" => hocon_files.push((runs.len(), pod.name.clone(), root.path("/run/jvb/config/jvb.conf"))),
                other => panic!("unknown image {other}"),
            }
        }
        eprintln!("case {}: {:.1?}", case.id, began.elapsed());
        runs.push(CaseRun {
            id: case.id.to_string(),
            output,
            inits,
            web: web_run.expect("a web pod"),
            prosody: prosody_run,
            hocon: BTreeMap::new(),
        });
    }
    let files: Vec<PathBuf> = hocon_files.iter().map(|(_, _, f)| f.clone()).collect();
    let mut parsed = hocon(tools, &files);
    for (i, pod, file) in hocon_files {
        let r = parsed
            .remove(&file)
            .unwrap_or_else(|| Err(format!("no result for {}", file.display())));
        runs[i].hocon.insert(pod, r);
    }
    let versions = BTreeMap::from([
        (
            "nginx".to_string(),
            version(&["nginx", "-v"], |l| l.starts_with("nginx version")),
        ),
        (
            "prosody".to_string(),
            version(&["prosodyctl", "about"], |l| {
                l.strip_prefix("Prosody ")
                    .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            }),
        ),
        (
            "node".to_string(),
            version(&["node", "--version"], |l| l.starts_with('v')),
        ),
        (
            "java".to_string(),
            version(&["java", "-version"], |l| l.contains("version")),
        ),
    ]);
    Observations {
        djm: tools.djm.clone(),
        cases: runs,
        versions,
    }
}
