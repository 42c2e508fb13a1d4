//! What the scale benchmark measures with: the operator's memory from `/proc`, its requests
//! from the API server's audit log, its reconcile counts from `/metrics`, and when each
//! Meeting got its links, from a watch of its own.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use conclave::api::Meeting;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::common::operator::http_get;

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The pid of a control-plane component by its command name.
pub fn component_pid(pids: &[u32], comm: &str) -> Option<u32> {
    pids.iter()
        .rev()
        .copied()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
}

/// One request of the audited user.
#[derive(Clone, Debug)]
pub struct Request {
    pub verb: String,
    pub resource: String,
    pub stage: String,
    pub uri: String,
}

impl Request {
    /// A request that changes something.
    pub fn is_write(&self) -> bool {
        self.stage == "ResponseComplete"
            && matches!(
                self.verb.as_str(),
                "create" | "update" | "patch" | "delete" | "deletecollection"
            )
    }

    /// A finished request other than a watch (watches are the caches, not reconciles).
    pub fn is_call(&self) -> bool {
        self.stage == "ResponseComplete" && self.verb != "watch"
    }

    /// A watch being opened for a cache: not the one that asks at start whether the API
    /// server streams initial lists, which selects no object and ends at once.
    pub fn opens_watch(&self) -> bool {
        let probe = conclave::controller::PROBE_SELECTOR
            .split_once('=')
            .map_or("", |(_, name)| name);
        self.stage == "ResponseStarted" && self.verb == "watch" && !self.uri.contains(probe)
    }
}

/// `": patch statefulsets 100, get secrets 3"` for a list of requests (most first), or nothing
/// for none: where requests that should not happen went.
pub fn breakdown(requests: &[Request]) -> String {
    let mut counts = BTreeMap::<(String, String), usize>::new();
    for r in requests {
        *counts.entry((r.verb.clone(), r.resource.clone())).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let parts: Vec<String> = counts.into_iter().map(|((v, r), n)| format!("{v} {r} {n}")).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

/// Reads the audit log from where it stopped last time, keeping one user's requests.
pub struct AuditTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl AuditTail {
    /// Starts at the current end of the log: only requests from now on are read.
    pub fn from_now(path: PathBuf) -> AuditTail {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        AuditTail {
            path,
            offset,
            partial: String::new(),
        }
    }

    /// Requests by `user` logged since the last call.
    pub fn read(&mut self, user: &str) -> Vec<Request> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut text = String::new();
        let Ok(n) = file.read_to_string(&mut text) else {
            return Vec::new();
        };
        self.offset += n as u64;
        let mut text = std::mem::take(&mut self.partial) + &text;
        // A line still being written stays for the next read.
        if !text.ends_with('\n') {
            let cut = text.rfind('\n').map_or(0, |i| i + 1);
            self.partial = text.split_off(cut);
        }
        text.lines()
            .filter(|l| l.contains(user))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .map(|e| Request {
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource: match e["objectRef"]["subresource"].as_str() {
                    Some(sub) => format!("{}/{sub}", e["objectRef"]["resource"].as_str().unwrap_or_default()),
                    None => e["objectRef"]["resource"].as_str().unwrap_or_default().to_string(),
                },
                stage: e["stage"].as_str().unwrap_or_default().to_string(),
                uri: e["requestURI"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

/// `conclave_reconciles_total` by kind.
pub fn reconciles(port: u16) -> BTreeMap<String, u64> {
    by_kind(port, "conclave_reconciles_total")
}

/// Seconds spent in reconciles so far, by kind (`conclave_reconcile_duration_seconds_sum`).
pub fn reconcile_seconds(port: u16) -> BTreeMap<String, f64> {
    by_kind(port, "conclave_reconcile_duration_seconds_sum")
}

/// The values of `metric{kind="..."}` from the operator's `/metrics`, by kind.
fn by_kind<T: std::str::FromStr>(port: u16, metric: &str) -> BTreeMap<String, T> {
    let Ok((200, body)) = http_get(port, "/metrics") else {
        return BTreeMap::new();
    };
    let prefix = format!("{metric}{{kind=\"");
    body.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (kind, value) = rest.split_once("\"} ")?;
            Some((kind.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of `conclave_reconciles_total` over kinds.
pub fn total_reconciles(port: u16) -> u64 {
    reconciles(port).values().sum()
}

/// When each Meeting first showed `status.credentialsSecret`, seen from a watch.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<HashMap<String, Instant>>>);

impl Links {
    /// Watches the Meetings of `api` until the process ends.
    pub fn watch(api: Api<Meeting>) -> Links {
        let links = Links::default();
        let seen = links.0.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(m) = event else { continue };
                let linked = m.status.as_ref().is_some_and(|s| s.credentials_secret.is_some());
                if linked {
                    let mut seen = seen.lock().expect("links lock");
                    seen.entry(m.name_any()).or_insert_with(Instant::now);
                }
            }
        });
        links
    }

    pub fn count(&self) -> usize {
        self.0.lock().expect("links lock").len()
    }

    /// When `name` got its links.
    pub fn at(&self, name: &str) -> Option<Instant> {
        self.0.lock().expect("links lock").get(name).copied()
    }

    /// The latest time any Meeting got its links.
    pub fn last(&self) -> Option<Instant> {
        self.0.lock().expect("links lock").values().max().copied()
    }
}

/// Distinct objects the operator logged as reconciled (`reconcile{bridge=...}` and
/// `reconcile{meeting=...}` spans of a `reconciled` line).
pub fn reconciled_objects(lines: &[String]) -> usize {
    let mut keys: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("reconciled"))
        .filter_map(|l| {
            let rest = &l[l.find("reconcile{")? + "reconcile{".len()..];
            Some(&rest[..rest.find('}')?])
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len()
}

/// The `q`-quantile (0..=1) of `values` (nearest rank); 0 for none.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The established TCP connections process `pid` holds to local port `port`: its socket inodes
/// (`/proc/<pid>/fd`) matched with the kernel's table of connections (`/proc/net/tcp`, `tcp6`).
pub fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let remote_port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&remote_port) && f[3] == "01" && inodes.contains(f[9])
        })
        .count()
}
