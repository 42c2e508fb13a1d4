//! The media side's checks: jicofo's and the videobridges' HOCON, TURN's reach to the SFUs, and
//! the environment contract of every image.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde_json::Value;

use super::checks::{Failures, Verdict, at, hocon, is_prosody_service, jvb_pods, pod, runs};
use super::env_readers;
use super::observe::Observations;
use super::operator::{POD_IP, secret_value};

pub fn env_read(obs: &Observations) -> Verdict {
    let mut unread: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, run) in runs(obs) {
        for p in &run.output.pods {
            for (name, _) in &p.env {
                if !env_readers::read_by(&obs.djm, &p.image, name) {
                    unread.entry(p.image.clone()).or_default().insert(name.clone());
                }
            }
        }
    }
    if unread.is_empty() {
        return Ok(());
    }
    Err(unread
        .iter()
        .map(|(image, names)| {
            format!(
                "{image}: {} (set by the operator, read by nothing in the image)",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

pub fn turn_own_endpoints(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let spec = case.spec();
        let Some(conf) = &run.output.turnserver_conf else {
            continue;
        };
        let denied: Vec<IpNet> = spec
            .turn
            .denied_peer_cidrs
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let allowed: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("allowed-peer-ip="))
            .collect();
        for i in 0..spec.sfu.replicas {
            let addr = case.expected_sfu_address(i);
            let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                continue;
            };
            if denied.iter().any(|n| n.contains(&ip)) {
                f.check(case.id, allowed.contains(&addr.as_str()), || {
                    format!("SFU replica {i} at {addr} is in a denied range, and allowed-peer-ip lines are {allowed:?}")
                });
            }
        }
    }
    f.verdict()
}

pub fn jicofo(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let d = case.domain();
        let Some(c) = hocon(&mut f, &case, run, pod(run, "jicofo")) else {
            continue;
        };
        let client = at(c, "/jicofo/xmpp/client");
        let host = at(client, "/hostname").as_str().unwrap_or_default();
        f.check(case.id, is_prosody_service(&case, host), || {
            format!("xmpp.client.hostname {host}")
        });
        let want = [
            ("/port", Value::from("5222")),
            ("/domain", Value::from(format!("auth.{d}"))),
            ("/xmpp-domain", Value::from(d.clone())),
            ("/username", Value::from("focus")),
            ("/password", Value::from(secret_value("jicofo-password"))),
            ("/conference-muc-jid", Value::from(format!("muc.{d}"))),
            ("/client-proxy", Value::from(format!("focus.{d}"))),
        ];
        for (p, v) in want {
            f.check(case.id, at(client, p) == &v, || {
                format!("xmpp.client{p} = {}, want {v}", at(client, p))
            });
        }
        let brewery = at(c, "/jicofo/bridge/brewery-jid");
        f.check(
            case.id,
            brewery.as_str() == Some(&format!("jvbbrewery@internal-muc.{d}")),
            || format!("bridge.brewery-jid {brewery}"),
        );
        f.check(case.id, at(c, "/jicofo/rest/host").as_str() == Some("0.0.0.0"), || {
            format!("rest {}", at(c, "/jicofo/rest"))
        });
        f.check(case.id, at(c, "/jicofo/health/enabled") == &Value::Bool(true), || {
            format!("health {}", at(c, "/jicofo/health"))
        });
        let auth = at(c, "/jicofo/authentication/enabled");
        f.check(case.id, auth.is_null() || auth == &Value::Bool(false), || {
            format!("jicofo's own authentication {auth} would override per-token roles")
        });
        let owner = at(c, "/jicofo/conference/enable-auto-owner");
        f.check(case.id, owner == &Value::Bool(!case.jwt()), || {
            format!("enable-auto-owner {owner}")
        });
    }
    f.verdict()
}

pub fn jvb(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        let d = case.domain();
        let spec = case.spec();
        let base = spec.sfu.media.base_port();
        for p in jvb_pods(run) {
            let i = p.replica.expect("replica");
            let Some(c) = hocon(&mut f, &case, run, p) else {
                continue;
            };
            let vb = at(c, "/videobridge");
            let shard = at(vb, "/apis/xmpp-client/configs/shard0");
            let host = at(shard, "/HOSTNAME").as_str().unwrap_or_default();
            f.check(case.id, is_prosody_service(&case, host), || {
                format!("{}: HOSTNAME {host}", p.name)
            });
            let want = [
                ("/PORT", Value::from("5222")),
                ("/DOMAIN", Value::from(format!("auth.{d}"))),
                ("/USERNAME", Value::from("jvb")),
                ("/PASSWORD", Value::from(secret_value("jvb-password"))),
                ("/MUC_JIDS", Value::from(format!("jvbbrewery@internal-muc.{d}"))),
                ("/MUC_NICKNAME", Value::from(p.name.clone())),
            ];
            for (k, v) in want {
                f.check(case.id, at(shard, k) == &v, || {
                    format!("{}: shard0{k} = {}, want {v}", p.name, at(shard, k))
                });
            }
            let port = at(vb, "/ice/udp/port");
            f.check(case.id, port.as_i64() == Some(i64::from(base + i)), || {
                format!("{}: ice.udp.port {port}, want {}", p.name, base + i)
            });
            let exposed: Vec<i32> = p
                .container
                .ports
                .iter()
                .flatten()
                .filter(|cp| cp.protocol.as_deref() == Some("UDP"))
                .map(|cp| cp.container_port)
                .collect();
            f.check(case.id, exposed == [base + i], || {
                format!(
                    "{}: UDP container ports {exposed:?}, the bridge listens on {port}",
                    p.name
                )
            });
            let mappings = at(c, "/ice4j/harvest/mapping/static-mappings");
            let public = case.expected_sfu_address(i);
            let mapped = mappings.as_array().into_iter().flatten().any(|m| {
                at(m, "/local-address").as_str() == Some(POD_IP) && at(m, "/public-address").as_str() == Some(&public)
            });
            f.check(case.id, mapped, || {
                format!("{}: static-mappings {mappings}, want {POD_IP} -> {public}", p.name)
            });
            let stun = at(c, "/ice4j/harvest/mapping/stun/enabled");
            f.check(case.id, stun == &Value::Bool(false), || {
                format!("{}: STUN mapping {stun}", p.name)
            });
            for (k, v) in [
                ("/apis/rest/enabled", Value::Bool(true)),
                ("/rest/shutdown/enabled", Value::Bool(true)),
                ("/http-servers/private/host", Value::from("0.0.0.0")),
            ] {
                f.check(case.id, at(vb, k) == &v, || {
                    format!("{}: videobridge{k} = {}", p.name, at(vb, k))
                });
            }
        }
    }
    f.verdict()
}

pub fn jvb_private_candidates(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        for p in jvb_pods(run) {
            let Some(c) = hocon(&mut f, &case, run, p) else {
                continue;
            };
            let v = at(c, "/videobridge/ice/advertise-private-candidates");
            f.check(case.id, v == &Value::Bool(false), || {
                format!(
                    "{}: advertise-private-candidates = {v}: the pod address {POD_IP} is offered to every client",
                    p.name
                )
            });
        }
    }
    f.verdict()
}

pub fn jvb_port_bindable(obs: &Observations) -> Verdict {
    let mut f = Failures::default();
    for (case, run) in runs(obs) {
        for p in jvb_pods(run) {
            let port: i32 = p.env("JVB_PORT").and_then(|v| v.parse().ok()).unwrap_or_default();
            let sc = p.container.security_context.clone().unwrap_or_default();
            let caps = sc.capabilities.unwrap_or_default();
            let added = caps.add.unwrap_or_default().iter().any(|c| c == "NET_BIND_SERVICE");
            let user = sc.run_as_user.unwrap_or(1000);
            f.check(case.id, port >= 1024 || added || user == 0, || {
                format!(
                    "{}: JVB_PORT {port} is below 1024, and uid {user} without NET_BIND_SERVICE cannot bind it \
                     (capabilities {:?}): refuse it at admission or grant the capability",
                    p.name, caps.drop
                )
            });
        }
    }
    f.verdict()
}
