//! Harness for tests that run real LiveKit: `livekit-server`, Redis, coturn and `lkclient`
//! (Conclave's pion-based test participant, `tests/tools/lkclient`), all inside a network
//! namespace the test creates, on documentation addresses that stand in for nodes' ExternalIPs.
//!
//! - [`netns`]: re-running a test inside new network and PID namespaces, refusing to run
//!   anywhere else, and the veth pair that carries the addresses;
//! - [`daemon`]: long-running programs with logs, readiness deadlines and kill-on-drop;
//! - [`config`]: Redis, coturn and livekit-server configuration, secrets kept out of it;
//! - [`token`]: LiveKit access tokens (HS256 JWT, LiveKit's claim shape);
//! - [`deployment`]: Redis, coturn and two livekit-server nodes, started and awaited;
//! - [`client`]: driving `lkclient` and reading its JSON results.
#![allow(dead_code)]

pub mod client;
pub mod config;
#[path = "../common/daemon.rs"]
pub mod daemon;
pub mod deployment;
#[path = "../common/netns.rs"]
pub mod netns;
pub mod token;

pub use netns::wait_until;

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Named checks, each printed as it is made and all failures reported together.
#[derive(Default)]
pub struct Checks {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, case: &str, ok: bool, observed: impl std::fmt::Display) {
        let line = format!("{} {case}: {observed}", if ok { "ok  " } else { "FAIL" });
        println!("{line}");
        if !ok {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }
}
