//! Driving `lkclient`: one process per participant, its JSON lines read as they come, its
//! token and key passed in the environment (never on a command line).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// What one participant does.
pub struct Join {
    pub url: String,
    pub token: String,
    /// The shared E2EE passphrase; `None` publishes in clear and cannot decrypt.
    pub key: Option<String>,
    /// `audio,video`, `audio`, `video` or `none`.
    pub publish: &'static str,
    pub relay_only: bool,
    /// Frames to receive on each of `expect_tracks` remote tracks (0: no goal).
    pub until_frames: u32,
    /// Count only verified frames towards `until_frames` (else every frame received).
    pub verified_goal: bool,
    pub expect_tracks: u32,
    /// After the goal, keep publishing until [`Client::finish`] closes stdin.
    pub hold: bool,
    /// Decrypt audio with LiveKit's Go SDK instead of lkclient's own code.
    pub sdk_audio: bool,
    /// The client's own hard deadline.
    pub timeout: Duration,
}

pub struct Client {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Result<Value, String>>,
    stderr: PathBuf,
}

impl Client {
    pub fn start(bin: &Path, dir: &Path, name: &str, join: &Join) -> Client {
        let stderr = dir.join(format!("lkclient-{name}.log"));
        let mut cmd = Command::new(bin.join("lkclient"));
        cmd.arg("join")
            .args(["--url", &join.url, "--publish", join.publish])
            .args(["--timeout", &format!("{}ms", join.timeout.as_millis())])
            .arg(if join.verified_goal {
                "--until-verified"
            } else {
                "--until-frames"
            })
            .arg(join.until_frames.to_string())
            .args(["--expect-tracks", &join.expect_tracks.to_string()])
            .env("LKCLIENT_TOKEN", &join.token)
            .env_remove("LKCLIENT_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("client log"));
        if let Some(key) = &join.key {
            cmd.env("LKCLIENT_KEY", key);
        }
        if join.relay_only {
            cmd.arg("--relay-only");
        }
        if join.hold {
            cmd.arg("--wait-stdin");
        }
        if join.sdk_audio {
            cmd.arg("--sdk-audio-decrypt");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start lkclient for {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = serde_json::from_str::<Value>(&line).map_err(|e| format!("{e}: {line}"));
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        Client {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            events,
            stderr,
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn next(&mut self, timeout: Duration) -> Value {
        match self.events.recv_timeout(timeout) {
            Ok(Ok(v)) => v,
            Ok(Err(bad)) => panic!("{}: lkclient printed a line that is not JSON: {bad}", self.name),
            Err(e) => panic!(
                "{}: no event from lkclient within {timeout:?} ({e}); its log ends:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// Waits for the event named `event` (`joined`, `goal`), failing if the run ends first.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self.next(left);
            match v["event"].as_str() {
                Some(e) if e == event => return v,
                Some("result") => panic!(
                    "{}: the run ended before {event:?}: {v}\nits log ends:\n{}",
                    self.name,
                    self.log_tail()
                ),
                _ => {}
            }
        }
    }

    /// Closes stdin (ending a held run) and returns the final report, checking that the exit
    /// code is the one the report names.
    pub fn finish(mut self, timeout: Duration) -> Report {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self.next(left);
            if v["event"] == "result" {
                break v;
            }
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let status = super::wait_until(left.max(Duration::from_secs(5)), || {
            self.child.try_wait().expect("wait for lkclient")
        })
        .unwrap_or_else(|| panic!("{}: lkclient did not exit after its result", self.name));
        let report: Report = serde_json::from_value(result.clone())
            .unwrap_or_else(|e| panic!("{}: unexpected result shape ({e}): {result}", self.name));
        assert_eq!(
            status.code(),
            Some(report.exit_code),
            "{}: exit status differs from the reported exit code: {result}",
            self.name
        );
        Report {
            name: self.name.clone(),
            raw: result.to_string(),
            ..report
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lkclient join`'s final line.
#[derive(Deserialize, Debug, Clone)]
pub struct Report {
    pub outcome: String,
    pub exit_code: i32,
    pub reason: String,
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub participant_sid: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub room_sid: String,
    #[serde(default)]
    pub server_node: String,
    pub e2ee: bool,
    pub relay_only: bool,
    pub elapsed_ms: u64,
    pub participants: Vec<String>,
    pub published: Vec<Published>,
    pub received: Vec<Received>,
    /// The client's name in the test (the identity may be unknown when a join failed).
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub raw: String,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Published {
    pub kind: String,
    pub track_sid: String,
    pub encryption: String,
    pub frames_sent: u64,
    pub key_frames_sent: u64,
    pub key_frame_requests: u64,
    pub write_errors: u64,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Received {
    pub participant: String,
    pub track_sid: String,
    pub kind: String,
    pub mime: String,
    /// As the SFU announced it: `GCM`, `NONE`, `CUSTOM`.
    pub encryption: String,
    /// `lkclient`, or `lksdk` when LiveKit's Go SDK decrypted; absent when nothing did.
    #[serde(default)]
    pub decrypted_with: Option<String>,
    pub rtp_packets: u64,
    pub frames_received: u64,
    pub frames_decrypted: u64,
    pub frames_verified: u64,
    pub decrypt_failed: u64,
    /// Frames with lkclient's marker whose bytes differ from what their sequence number says.
    pub content_mismatch: u64,
    /// Frames without lkclient's marker at all: the SFU's silence or blank frames on a clear
    /// track (it marks those only on encrypted tracks), or another client's media.
    pub foreign_frames: u64,
    pub server_injected: u64,
    pub undecryptable_without_key: u64,
    /// Frames on a track announced encrypted whose bytes show the plaintext's marker.
    pub plaintext_seen: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    #[serde(default)]
    pub first_error: Option<String>,
    #[serde(default)]
    pub ice: Option<Ice>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Ice {
    /// `<type> <protocol> <address>:<port>`, e.g. `relay udp 192.0.2.10:50000`.
    pub local: String,
    pub remote: String,
}

impl Report {
    /// The tracks received from `participant`.
    pub fn from(&self, participant: &str) -> Vec<&Received> {
        self.received.iter().filter(|r| r.participant == participant).collect()
    }
}

/// `lkclient selftest`: its E2EE checked against LiveKit's Go SDK.
pub fn selftest(bin: &Path) -> Value {
    let out = Command::new(bin.join("lkclient"))
        .arg("selftest")
        .output()
        .expect("run lkclient selftest");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lkclient selftest printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && v["failed"] == 0,
        "lkclient selftest failed: {v:#}"
    );
    v
}
