//! prosody's checks: its configuration as Lua, prosodyctl and prosody's own loader read it.

use std::collections::BTreeSet;

use serde_json::Value;

use super::checks::{Failures, Verdict, at, lines_with, pod, prosody_opt, runs, strings};
use super::observe::{CaseRun, Observations};
use super::operator::secret_value;

pub fn prosody_loads(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let p = &run.prosody;
        f.check(case.id, p.luac.len() >= 2, || {
            format!("prosody config files: {:?}", p.luac)
        });
        for (file, err) in &p.luac {
            f.check(case.id, err.is_empty(), || format!("luac5.4 -p {file}: {err}"));
        }
        f.check(
            case.id,
            p.check_status == Some(0) && p.check_output.contains("All checks passed"),
            || format!("prosodyctl check config: {:?}\n{}", p.check_status, p.check_output),
        );
        f.check(case.id, p.config.is_some(), || {
            format!("prosody's config loader: {}", p.load_error)
        });
    }
    f.verdict()
}

pub fn prosody_hosts(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let d = case.domain();
        let host = |h: &str| run.prosody.config.as_ref().and_then(|c| c.get(h));
        for vhost in [d.clone(), format!("auth.{d}")] {
            f.check(
                case.id,
                host(&vhost).is_some_and(|h| h.get("component_module").is_none()),
                || format!("no VirtualHost {vhost}"),
            );
        }
        for (component, module) in [
            (format!("muc.{d}"), "muc"),
            (format!("internal-muc.{d}"), "muc"),
            (format!("lobby.{d}"), "muc"),
            (format!("focus.{d}"), "client_proxy"),
        ] {
            let got = host(&component).map(|h| at(h, "/component_module").clone());
            f.check(case.id, got == Some(Value::String(module.into())), || {
                format!("Component {component} is {got:?}, want {module}")
            });
        }
        let target = prosody_opt(run, &format!("focus.{d}"), "target_address");
        f.check(case.id, target.as_str() == Some(&format!("focus@auth.{d}")), || {
            format!("focus target_address {target}")
        });
        f.check(case.id, host(&format!("guest.{d}")).is_none(), || {
            format!("an anonymous VirtualHost guest.{d} exists")
        });
        let main_muc = prosody_opt(run, &d, "main_muc");
        f.check(case.id, main_muc.as_str() == Some(&format!("muc.{d}")), || {
            format!("main_muc {main_muc}")
        });
    }
    f.verdict()
}

pub fn prosody_auth(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let d = case.domain();
        let opt = |k: &str| prosody_opt(run, &d, k).clone();
        let muc_modules = strings(prosody_opt(run, &format!("muc.{d}"), "modules_enabled"));
        if case.jwt() {
            let want = [
                ("authentication", Value::from("token")),
                ("app_id", Value::from("conclave")),
                ("app_secret", Value::from(secret_value("jwt-app-secret"))),
                ("allow_empty_token", Value::Bool(false)),
                ("asap_accepted_issuers", serde_json::json!(["conclave"])),
                ("asap_accepted_audiences", serde_json::json!(["conclave"])),
            ];
            for (k, v) in want {
                let got = opt(k);
                f.check(case.id, got == v, || format!("VirtualHost {d}: {k} = {got}, want {v}"));
            }
            f.check(case.id, muc_modules.iter().any(|m| m == "token_verification"), || {
                format!("muc.{d} does not verify tokens: {muc_modules:?}")
            });
        } else {
            let got = opt("authentication");
            f.check(case.id, got == "jitsi-anonymous", || format!("authentication = {got}"));
            f.check(case.id, opt("app_secret").is_null(), || {
                "an app_secret without JWT".into()
            });
        }
    }
    f.verdict()
}

pub fn prosody_modules(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let d = case.domain();
        let env = |k: &str| pod(run, "prosody").env(k).unwrap_or_default().to_string();
        let list = |v: String| -> Vec<String> { v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect() };
        let muc = strings(prosody_opt(run, &format!("muc.{d}"), "modules_enabled"));
        let mut want_muc = list(env("XMPP_MUC_MODULES"));
        want_muc.push("muc_max_occupants".into());
        for m in want_muc {
            f.check(case.id, muc.contains(&m), || format!("muc.{d} lacks {m}: {muc:?}"));
        }
        let vhost = strings(prosody_opt(run, &d, "modules_enabled"));
        let mut want = list(env("XMPP_MODULES"));
        want.extend(["bosh", "websocket", "muc_lobby_rooms"].map(String::from));
        for m in want {
            f.check(case.id, vhost.contains(&m), || {
                format!("VirtualHost {d} lacks {m}: {vhost:?}")
            });
        }
        let limit = prosody_opt(run, &format!("muc.{d}"), "muc_max_occupants");
        f.check(
            case.id,
            limit.as_str() == Some(env("MAX_PARTICIPANTS").as_str()),
            || format!("muc_max_occupants {limit}"),
        );
        let module = "/prosody-plugins-custom/mod_conclave_room_limits.lua";
        f.check(case.id, pod(run, "prosody").files.contains_key(module), || {
            format!("{module} is not mounted")
        });
    }
    f.verdict()
}

pub fn prosody_plugin_paths(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let paths = strings(prosody_opt(run, "*", "plugin_paths"));
        f.check(
            case.id,
            paths.first().map(String::as_str) == Some("/prosody-plugins-custom"),
            || format!("plugin_paths {paths:?}: /prosody-plugins-custom must come first"),
        );
    }
    f.verdict()
}

/// The `external_services` entries of `kind` as (kind, host, port, transport, ttl).
fn services(run: &CaseRun, kind: &str) -> Vec<(String, String, i64, String, i64)> {
    prosody_opt(run, "*", "external_services")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| at(s, "/type").as_str() == Some(kind))
        .map(|s| {
            (
                kind.to_string(),
                at(s, "/host").as_str().unwrap_or_default().to_string(),
                at(s, "/port").as_i64().unwrap_or_default(),
                at(s, "/transport").as_str().unwrap_or_default().to_string(),
                at(s, "/ttl").as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

pub fn prosody_turn(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let t = case.spec().turn;
        let ttl = conclave::duration::parse_duration(&t.credential_ttl)
            .expect("ttl")
            .as_secs() as i64;
        let entry = |kind: &str, h: &str, port: i32, transport: &str| {
            (
                kind.to_string(),
                h.to_string(),
                i64::from(port),
                transport.to_string(),
                ttl,
            )
        };
        let mut want = BTreeSet::new();
        for h in case.expected_turn_hosts() {
            want.extend([entry("turn", &h, t.port, "udp"), entry("turn", &h, t.port, "tcp")]);
        }
        want.extend(
            case.expected_turns_host()
                .map(|h| entry("turns", &h, t.tls_port, "tcp")),
        );
        let mut got: BTreeSet<_> = services(run, "turn").into_iter().collect();
        got.extend(services(run, "turns"));
        f.check(case.id, got == want, || {
            format!(
                "TURN announced as {got:?}, want {want:?} (the TURN Service's address, not {} which is the Ingress; TURN over TLS only at a name the certificate covers)",
                case.domain()
            )
        });
        let secret = prosody_opt(run, "*", "external_service_secret");
        let want_secret = if t.enabled {
            Value::from(secret_value("turn-secret"))
        } else {
            Value::Null
        };
        f.check(case.id, *secret == want_secret, || {
            format!("external_service_secret {secret}")
        });
    }
    f.verdict()
}

pub fn prosody_stun(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let t = case.spec().turn;
        if !t.enabled {
            continue;
        }
        let stun = services(run, "stun");
        let hosts = case.expected_turn_hosts();
        let ok = !stun.is_empty()
            && stun
                .iter()
                .all(|(_, h, p, tr, _)| hosts.contains(h) && *p == i64::from(t.port) && tr == "udp");
        f.check(case.id, ok, || {
            format!(
                "STUN announced as {stun:?}, want coturn at {hosts:?} port {} udp",
                t.port
            )
        });
    }
    f.verdict()
}

/// prosody listens on IPv6 exactly when the operator was told the cluster has it.
pub fn prosody_ipv4(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        for key in ["c2s_interfaces", "http_interfaces"] {
            let v = strings(prosody_opt(run, "*", key));
            let v6 = v.iter().any(|i| i.contains(':'));
            f.check(case.id, v6 == case.cluster.ipv6, || {
                format!(
                    "{key} = {v:?} (cluster IPv6: {}): on a kernel without IPv6 prosody logs {:?}",
                    case.cluster.ipv6,
                    lines_with(&run.prosody.without_ipv6.log, "Failed to open server port")
                )
            });
        }
    }
    f.verdict()
}

pub fn prosody_serves(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let p = &run.prosody;
        let ws = p.websocket.echo.as_deref().unwrap_or_default();
        f.check(
            case.id,
            p.start.listening && p.bosh.status == 200 && p.websocket.status == 101 && ws.contains("xmpp-framing"),
            || {
                format!(
                    "prosody on the rendered config: listening {}, BOSH {} {:?}, websocket {} {ws:?} {:?}\n{}",
                    p.start.listening, p.bosh.status, p.bosh.error, p.websocket.status, p.websocket.error, p.start.log
                )
            },
        );
    }
    f.verdict()
}

pub fn prosody_loads_own_module(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let log = &run.prosody.start.log;
        let module = conclave::engine::jitsi::rooms::MODULE;
        f.check(
            case.id,
            run.prosody.start.listening && !log.contains(&format!("Unable to load module '{module}'")),
            || format!("prosody does not load {module}: {}", lines_with(log, module)),
        );
    }
    f.verdict()
}

pub fn prosody_without_ipv6(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let p = &run.prosody;
        f.check(
            case.id,
            p.without_ipv6.listening && p.without_ipv6_bosh.status == 200,
            || {
                format!(
                    "prosody on a kernel without IPv6: listening {}, BOSH {}\n{}",
                    p.without_ipv6.listening, p.without_ipv6_bosh.status, p.without_ipv6.log
                )
            },
        );
    }
    f.verdict()
}
