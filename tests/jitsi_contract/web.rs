//! The web pod for real: Debian's nginx started by the image's own s6 run script on the
//! configuration its init script rendered, with prosody's stand-in reachable only under the
//! operator-intended name through the DNS stub, then the browser's first requests: BOSH, the
//! XMPP websocket and `config.js`, which node evaluates. A second start runs on a kernel
//! without IPv6.

use std::net::SocketAddr;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use super::cases::Case;
use super::container::{Root, Start};
use super::dns::Stub;
use super::http::{self, Reply, Seen, Standin};
use super::observe::{DNS_IP, PROSODY_IP};

/// nginx's port in the rootless images.
const NGINX: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8000);
/// The image's s6 run script for nginx.
const RUN: &str = "/s6-overlay/scripts/nginx";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WebRun {
    pub start: Start,
    /// `nginx -T`: the configuration nginx actually loaded, file by file.
    pub loaded: String,
    pub bosh: Reply,
    pub websocket: Reply,
    pub config_js: Reply,
    /// `config` after node ran the served `config.js`, or node's error.
    pub config: Option<serde_json::Value>,
    pub node_error: String,
    pub dns: Vec<String>,
    pub standin: Vec<Seen>,
    pub without_ipv6: Start,
}

/// Runs `config.js` as a browser would load it and returns `config` as JSON.
fn evaluate(root: &Root, js: &str) -> Result<serde_json::Value, String> {
    let file = root.path("/run/served-config.js");
    std::fs::write(&file, js).expect("write config.js");
    let script = "const vm = require('vm');\
        const ctx = {};\
        vm.createContext(ctx);\
        vm.runInContext(require('fs').readFileSync(process.argv[1], 'utf8'), ctx, {filename: 'config.js'});\
        process.stdout.write(JSON.stringify(ctx.config));";
    let out = std::process::Command::new("node")
        .args(["-e", script])
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn run(root: &Root, case: &Case) -> WebRun {
    let dns = Stub::start(SocketAddr::new(DNS_IP.into(), 53), &case.prosody_fqdn(), PROSODY_IP);
    let standin = Standin::start(SocketAddr::new(PROSODY_IP.into(), 5280));
    let domain = case.domain();
    let mut run = WebRun::default();

    let loaded_log = root.log_file("/run/nginx-T.out");
    let err = loaded_log.try_clone().expect("clone");
    let _ = root
        .command(&["nginx", "-T", "-c", "/run/web/config/nginx/nginx.conf"])
        .stdout(Stdio::from(loaded_log))
        .stderr(Stdio::from(err))
        .status();
    run.loaded = root.read("/run/nginx-T.out").unwrap_or_default();

    let (server, started) = root.start(RUN, "/run/nginx.out", NGINX, false);
    run.start = started;
    if let Some(server) = server {
        run.bosh = http::get(NGINX, &domain, "/http-bind?room=contract");
        run.websocket = http::websocket(NGINX, &domain, "/xmpp-websocket?room=contract");
        run.config_js = http::get(NGINX, &domain, "/config.js");
        drop(server);
        run.start.log = root.read("/run/nginx.out").unwrap_or_default();
        match evaluate(root, &run.config_js.body) {
            Ok(v) => run.config = Some(v),
            Err(e) => run.node_error = e,
        }
    }
    run.dns = dns.queries();
    run.standin = standin.seen();

    run.without_ipv6 = root.start(RUN, "/run/nginx-noipv6.out", NGINX, true).1;
    run
}
