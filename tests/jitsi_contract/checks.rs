//! One function per contract check: what the operator SHOULD produce, judged on what the real
//! programs made of its output. Each returns every case's failures with the evidence.

use serde_json::Value;

use super::cases::{self, Case};
use super::check_media as media;
use super::check_prosody as prosody;
use super::check_web as web;
use super::observe::{CaseRun, Observations};
use super::operator::Pod;

pub type Verdict = Result<(), String>;

/// Collects failures across the matrix.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn check(&mut self, case: &str, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("[{case}] {}", what()));
        }
    }
    pub fn verdict(self) -> Verdict {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("\n"))
        }
    }
}

/// Each case's run with the case it came from.
pub fn runs(obs: &Observations) -> Vec<(Case, &CaseRun)> {
    cases::all()
        .into_iter()
        .map(|c| {
            let run = obs
                .cases
                .iter()
                .find(|r| r.id == c.id)
                .unwrap_or_else(|| panic!("no run for case {}", c.id));
            (c, run)
        })
        .collect()
}

pub fn pod<'a>(run: &'a CaseRun, image: &str) -> &'a Pod {
    run.output
        .pods
        .iter()
        .find(|p| p.image == image)
        .unwrap_or_else(|| panic!("no {image} pod"))
}

/// A file an init script rendered.
pub fn rendered<'a>(run: &'a CaseRun, image: &str, path: &str) -> &'a str {
    run.inits
        .iter()
        .find(|i| i.image == image)
        .and_then(|i| i.files.get(path))
        .map(String::as_str)
        .unwrap_or_default()
}

/// Lines of `text` containing `needle`, for evidence.
pub fn lines_with(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A value by JSON pointer, `null` when absent.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}

/// A prosody option of `host` (falling back to the global section, as prosody does).
pub fn prosody_opt<'a>(run: &'a CaseRun, host: &str, key: &str) -> &'a Value {
    let Some(c) = &run.prosody.config else {
        return &Value::Null;
    };
    match c.get(host).and_then(|h| h.get(key)) {
        Some(v) => v,
        None => c.get("*").and_then(|g| g.get(key)).unwrap_or(&Value::Null),
    }
}

/// A Lua list as strings (an empty Lua table comes out as `{}`).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// For the JVM checks: a pod's parsed HOCON.
pub fn hocon<'a>(f: &mut Failures, case: &Case, run: &'a CaseRun, pod: &Pod) -> Option<&'a Value> {
    match run.hocon.get(&pod.name) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            f.check(case.id, false, || {
                format!("{}: Lightbend Config refuses it: {e}", pod.name)
            });
            None
        }
        None => {
            f.check(case.id, false, || format!("{}: not parsed", pod.name));
            None
        }
    }
}

/// Whether `host` names prosody's Service (short form with the search list, or fully qualified).
pub fn is_prosody_service(case: &Case, host: &str) -> bool {
    let short = format!("{}-prosody.{}.svc", case.bridge, case.namespace);
    host == short || host == case.prosody_fqdn()
}

pub fn jvb_pods(run: &CaseRun) -> Vec<&Pod> {
    run.output.pods.iter().filter(|p| p.image == "jvb").collect()
}

/// A check: every case's observations in, the failures with their evidence out.
pub type Check = fn(&Observations) -> Verdict;

/// Every check by name; each has a test of the same name in `tests/jitsi_contract.rs`.
pub fn all() -> Vec<(&'static str, Check)> {
    vec![
        ("init_scripts_succeed", web::init_scripts),
        ("web_nginx_loads_the_rendered_files_unchanged", web::nginx_unchanged),
        ("web_bosh_reaches_prosody", web::bosh),
        ("web_websocket_reaches_prosody", web::websocket),
        ("web_config_js_connects_to_the_bridge", web::connection),
        ("web_e2ee_available", web::e2ee_available),
        ("web_e2ee_encoded_transform_on", web::encoded_transform),
        ("web_recording_and_streaming_off", web::recording_off),
        ("web_transcription_off_keeps_image_settings", web::transcription),
        ("web_local_recording_off", web::local_recording),
        ("web_no_third_party_requests", web::third_party),
        ("web_starts_without_ipv6", web::without_ipv6),
        ("prosody_config_loads", prosody::prosody_loads),
        ("prosody_hosts_and_components", prosody::prosody_hosts),
        ("prosody_token_authentication", prosody::prosody_auth),
        ("prosody_modules_enabled", prosody::prosody_modules),
        ("prosody_plugin_paths", prosody::prosody_plugin_paths),
        ("prosody_turn_at_turn_address", prosody::prosody_turn),
        ("prosody_stun_announced", prosody::prosody_stun),
        ("prosody_serves_bosh_and_websocket", prosody::prosody_serves),
        ("prosody_loads_the_operators_module", prosody::prosody_loads_own_module),
        ("prosody_starts_without_ipv6", prosody::prosody_without_ipv6),
        ("prosody_listens_ipv4_only", prosody::prosody_ipv4),
        ("jicofo_config", media::jicofo),
        ("jvb_config", media::jvb),
        ("jvb_private_candidates_off", media::jvb_private_candidates),
        ("jvb_can_bind_its_media_port", media::jvb_port_bindable),
        ("turn_relays_to_own_sfu_endpoints", media::turn_own_endpoints),
        ("env_every_variable_is_read", media::env_read),
    ]
}
