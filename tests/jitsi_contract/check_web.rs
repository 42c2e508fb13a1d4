//! The web pod's checks: nginx on the rendered configuration, the way to prosody, and the
//! client settings in `config.js`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cases::Case;
use super::checks::{Failures, Verdict, at, lines_with, rendered, runs};
use super::http;
use super::observe::{CaseRun, Observations};

pub fn init_scripts(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        for i in &run.inits {
            f.check(
                case.id,
                i.status == Some(0) && !format!("{}{}", i.stdout, i.stderr).contains("FATAL"),
                || format!("{} ({}): exit {:?}\n{}{}", i.pod, i.image, i.status, i.stdout, i.stderr),
            );
            f.check(case.id, !i.files.is_empty(), || format!("{}: rendered nothing", i.pod));
        }
    }
    f.verdict()
}

/// `nginx -T` output as (file, content) pairs.
fn loaded_files(dump: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in dump.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("# configuration file ") {
            if let Some((n, c)) = current.take() {
                out.insert(n, c);
            }
            current = Some((name.trim_end().trim_end_matches(':').to_string(), String::new()));
        } else if line.starts_with("nginx: ") {
            // nginx's own verdict on stderr, which shares the file with the dump.
        } else if let Some((_, c)) = current.as_mut() {
            c.push_str(line);
        }
    }
    if let Some((n, c)) = current {
        out.insert(n, c);
    }
    out
}

pub fn nginx_unchanged(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let loaded = loaded_files(&run.web.loaded);
        f.check(case.id, !loaded.is_empty(), || {
            format!("nginx -T showed nothing:\n{}", run.web.loaded)
        });
        for must in ["nginx.conf", "site-confs/default", "meet.conf"] {
            let path = format!("/run/web/config/nginx/{must}");
            f.check(case.id, loaded.contains_key(&path), || {
                format!("nginx did not load {path}")
            });
        }
        for (path, content) in &loaded {
            if path.starts_with("/run/web/config/") {
                let mine = rendered(run, "web", path);
                f.check(case.id, content.trim_end() == mine.trim_end(), || {
                    format!("nginx loaded {path} differently from what the init script rendered")
                });
            } else {
                let host = path == "/etc/nginx/mime.types" || path.starts_with("/etc/nginx/modules-enabled/");
                f.check(case.id, host, || {
                    format!("nginx loaded {path}, which is not the image's")
                });
            }
        }
    }
    f.verdict()
}

fn proxy_evidence(run: &CaseRun, what: &str) -> String {
    format!(
        "meet.conf: {}\nDNS stub saw: {:?}\nstand-in saw: {:?}\nnginx: {}",
        lines_with(rendered(run, "web", "/run/web/config/nginx/meet.conf"), "proxy_pass"),
        run.web.dns,
        run.web.standin,
        lines_with(&run.web.start.log, what)
    )
}

pub fn bosh(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let r = &run.web.bosh;
        let reached = run.web.standin.iter().any(|s| {
            s.target.starts_with("/http-bind?") && s.target.contains("room=contract") && s.host == case.domain()
        });
        f.check(case.id, r.status == 200 && r.came_from_standin() && reached, || {
            format!(
                "GET /http-bind: {} {:?} {}\n{}",
                r.status,
                r.error,
                r.body
                    .lines()
                    .find(|l| l.contains("<title>"))
                    .unwrap_or_default()
                    .trim(),
                proxy_evidence(run, "http-bind")
            )
        });
    }
    f.verdict()
}

pub fn websocket(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let r = &run.web.websocket;
        let accept = r
            .headers
            .iter()
            .find(|(k, _)| k == "sec-websocket-accept")
            .map(|(_, v)| v.clone());
        let echoed = r.echo.as_deref().is_some_and(|e| e.starts_with("standin:<open"));
        f.check(
            case.id,
            r.status == 101 && r.came_from_standin() && accept == Some(http::expected_accept()) && echoed,
            || {
                format!(
                    "websocket upgrade on /xmpp-websocket: {} {:?} accept {accept:?} echo {:?}\n{}",
                    r.status,
                    r.error,
                    r.echo,
                    proxy_evidence(run, "xmpp-websocket")
                )
            },
        );
    }
    f.verdict()
}

/// `config` as node evaluated it, or a failure.
fn config<'a>(f: &mut Failures, case: &Case, run: &'a CaseRun) -> Option<&'a Value> {
    f.check(case.id, run.web.config_js.status == 200, || {
        format!(
            "GET /config.js: {} {:?}",
            run.web.config_js.status, run.web.config_js.error
        )
    });
    f.check(case.id, run.web.config.is_some(), || {
        format!("node: {}", run.web.node_error)
    });
    run.web.config.as_ref()
}

/// A check over `config.js`: `test` returns (ok, evidence) for one case's config.
fn config_check(obs: &Observations, test: impl Fn(&Case, &Value) -> (bool, String)) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        if let Some(c) = config(&mut f, &case, run) {
            let (ok, evidence) = test(&case, c);
            f.check(case.id, ok, || evidence);
        }
    }
    f.verdict()
}

pub fn connection(obs: &Observations) -> Verdict {
    config_check(obs, |case, c| {
        let d = case.domain();
        let want = [
            ("/hosts/domain", d.clone()),
            ("/hosts/muc", format!("muc.{d}")),
            ("/bosh", format!("https://{d}/http-bind")),
            ("/websocket", format!("wss://{d}/xmpp-websocket")),
        ];
        let bad: Vec<String> = want
            .iter()
            .filter(|(p, v)| at(c, p).as_str() != Some(v.as_str()))
            .map(|(p, v)| format!("{p} = {} (want {v})", at(c, p)))
            .collect();
        let anon = at(c, "/hosts/anonymousdomain");
        (
            bad.is_empty() && anon.is_null(),
            format!("{bad:?} anonymousdomain {anon}"),
        )
    })
}

pub fn e2ee_available(obs: &Observations) -> Verdict {
    config_check(obs, |_, c| {
        let ok = at(c, "/e2ee/disabled") != &Value::Bool(true)
            && at(c, "/testing/disableE2EE") != &Value::Bool(true)
            && at(c, "/e2ee/externallyManagedKey") == &Value::Bool(false);
        (ok, format!("e2ee {} testing {}", at(c, "/e2ee"), at(c, "/testing")))
    })
}

pub fn encoded_transform(obs: &Observations) -> Verdict {
    config_check(obs, |_, c| {
        let v = at(c, "/enableEncodedTransformSupport");
        (
            v == &Value::Bool(true),
            format!("config.enableEncodedTransformSupport = {v}: Firefox and Safari get no E2EE"),
        )
    })
}

pub fn recording_off(obs: &Observations) -> Verdict {
    config_check(obs, |_, c| {
        let off = [
            "/recordingService/enabled",
            "/fileRecordingsEnabled",
            "/liveStreaming/enabled",
            "/liveStreamingEnabled",
        ];
        let on: Vec<&str> = off
            .iter()
            .copied()
            .filter(|p| at(c, p) != &Value::Bool(false))
            .collect();
        (on.is_empty(), format!("not false: {on:?}"))
    })
}

pub fn transcription(obs: &Observations) -> Verdict {
    config_check(obs, |_, c| {
        let t = at(c, "/transcription");
        let ok = at(t, "/enabled") == &Value::Bool(false)
            && at(t, "/disableClosedCaptions") == &Value::Bool(true)
            && !at(t, "/preferredLanguage").is_null();
        (
            ok,
            format!("config.transcription = {t}: the image's disableClosedCaptions and other keys must survive"),
        )
    })
}

pub fn local_recording(obs: &Observations) -> Verdict {
    config_check(obs, |_, c| {
        let v = at(c, "/localRecording");
        (
            at(v, "/disable") == &Value::Bool(true),
            format!("config.localRecording = {v}: local recording captures decrypted media"),
        )
    })
}

/// Every URL-like string in `v` (http, ws, stun, turn) with where it is.
fn urls(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => {
            let lower = s.to_ascii_lowercase();
            if [
                "http://", "https://", "ws://", "wss://", "stun:", "turn:", "turns:", "//",
            ]
            .iter()
            .any(|p| lower.starts_with(p))
            {
                out.push((path.to_string(), s.clone()));
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| urls(x, &format!("{path}/{i}"), out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| urls(x, &format!("{path}/{k}"), out)),
        _ => {}
    }
}

pub fn third_party(obs: &Observations) -> Verdict {
    config_check(obs, |case, c| {
        let mut found = Vec::new();
        urls(c, "", &mut found);
        let d = case.domain();
        let foreign: Vec<_> = found
            .into_iter()
            .filter(|(_, u)| {
                let rest = u.split_once(':').map(|(_, r)| r.trim_start_matches('/')).unwrap_or(u);
                let host = rest.split(['/', ':', '?']).next().unwrap_or_default();
                host != d
            })
            .collect();
        let flag = at(c, "/disableThirdPartyRequests");
        (
            foreign.is_empty() && flag == &Value::Bool(true),
            format!("disableThirdPartyRequests {flag}; third-party URLs {foreign:?}"),
        )
    })
}

/// Without `--ipv6` nginx must start on a kernel without IPv6; with it, it must listen on IPv6.
pub fn without_ipv6(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let site = rendered(run, "web", "/run/web/config/nginx/site-confs/default");
        let v6 = site.lines().any(|l| l.trim().starts_with("listen [::]:8000"));
        f.check(case.id, v6 == case.cluster.ipv6, || {
            format!(
                "the operator says the cluster {} IPv6, nginx listens on: {}",
                if case.cluster.ipv6 { "has" } else { "has no" },
                lines_with(site, "listen")
            )
        });
        if case.cluster.ipv6 {
            continue;
        }
        let s = &run.web.without_ipv6;
        f.check(case.id, s.listening, || {
            format!(
                "nginx on a kernel without IPv6 did not start: {}\nnginx.conf: {}",
                s.log.trim(),
                lines_with(site, "listen")
            )
        });
    }
    f.verdict()
}

#[test]
fn reads_nginx_dump_file_by_file() {
    let dump = "nginx: the configuration file /a syntax is ok\n# configuration file /a:\nhttp {\n# x\n}\n\n\
                # configuration file /b:\nx;\nnginx: configuration file /a test is successful\n";
    let files = loaded_files(dump);
    assert_eq!(files.len(), 2);
    assert_eq!(files["/a"], "http {\n# x\n}\n\n");
    assert_eq!(files["/b"], "x;\n");
}
