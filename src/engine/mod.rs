//! Conferencing engines. Each engine turns a Bridge's inputs ([`Ctx`]) into its own children
//! (signalling, web, the SFU pool's pods) and its own network flows; what every engine shares
//! (certificates, TURN, the SFU pool's shape and placement, the base network policies) lives in
//! [`crate::bridge`]. The reconciler and `conclave render` only ever call [`desired`].

pub mod jitsi;
pub mod livekit;

use crate::api::bridge::{BridgeSpec, Engine};
use crate::bridge::context::Ctx;
use crate::bridge::{certificate, coturn, network_policy};
use crate::child::Child;

/// Every child of a Bridge, in a stable order: certificate first (everything else mounts its
/// Secret), then the engine's children, TURN, and the network policies last.
pub fn desired(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = certificate::build(ctx)?;
    let policies = match ctx.spec.engine {
        Engine::Jitsi => {
            out.extend(jitsi::build(ctx)?);
            jitsi::network_policy::build(ctx)
        }
        Engine::LiveKit => {
            out.extend(livekit::build(ctx)?);
            livekit::network_policy::build(ctx)
        }
    };
    out.extend(coturn::build(ctx)?);
    out.extend(network_policy::build(ctx, policies)?);
    Ok(out)
}

/// The Deployments (by name suffix) that carry the engine's signalling; the Bridge serves
/// nobody until all are ready. With a description for the condition message.
pub fn signalling(spec: &BridgeSpec) -> (Vec<&'static str>, &'static str) {
    match spec.engine {
        Engine::Jitsi => (jitsi::SIGNALLING.to_vec(), "prosody, jicofo and web"),
        Engine::LiveKit => livekit::signalling(spec),
    }
}

/// The room size from which the engine's clients cannot keep E2EE on for everyone, if the
/// engine has one. Conclave's LiveKit join page encrypts from the first frame whatever the
/// room's size, so LiveKit has none.
pub fn e2ee_room_limit(engine: Engine) -> Option<i32> {
    match engine {
        Engine::Jitsi => Some(jitsi::E2EE_MAX_MODE_LIMIT),
        Engine::LiveKit => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;
    use crate::labels;

    fn both_engines() -> [Ctx; 2] {
        let mut livekit = sample_ctx();
        livekit.spec.engine = Engine::LiveKit;
        [sample_ctx(), livekit]
    }

    #[test]
    fn children_are_unique_owned_and_labelled() {
        for ctx in both_engines() {
            children_are_unique_owned_and_labelled_for(&ctx);
        }
    }

    fn children_are_unique_owned_and_labelled_for(ctx: &Ctx) {
        let children = desired(ctx).expect("builds");
        let mut seen = BTreeSet::new();
        for c in &children {
            assert!(seen.insert(c.key()), "duplicate {}", c.key());
            let m = &c.object.metadata;
            assert_eq!(m.namespace.as_deref(), Some("conf"), "{}", c.key());
            assert_eq!(
                m.owner_references.as_deref(),
                Some(&[ctx.owner.clone()][..]),
                "{}",
                c.key()
            );
            let l = m.labels.clone().unwrap_or_default();
            assert_eq!(
                l.get(labels::MANAGED_BY_KEY).map(String::as_str),
                Some(labels::MANAGED_BY),
                "{}",
                c.key()
            );
            let component = l.get(labels::COMPONENT).cloned().unwrap_or_default();
            let allowed: BTreeSet<String> = [
                labels::NAME,
                labels::INSTANCE,
                labels::COMPONENT,
                labels::PART_OF,
                labels::MANAGED_BY_KEY,
                labels::OWNER_KIND,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            assert_eq!(l.keys().cloned().collect::<BTreeSet<_>>(), allowed, "{}", c.key());
            assert_eq!(l.get(labels::INSTANCE).map(String::as_str), Some("meet"));
            assert_eq!(l.get(labels::OWNER_KIND).map(String::as_str), Some("bridge"));
            assert!(!component.is_empty());
            assert!(c.name().starts_with("meet-"), "{}", c.key());
        }
        let kinds: BTreeSet<&str> = children.iter().map(|c| c.resource.kind.as_str()).collect();
        for k in [
            "Certificate",
            "ConfigMap",
            "Deployment",
            "Service",
            "StatefulSet",
            "Ingress",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(k), "missing {k}: {kinds:?}");
        }
    }

    #[test]
    fn optional_parts_follow_the_spec() {
        for mut ctx in both_engines() {
            ctx.spec.turn.enabled = false;
            ctx.spec.tls = None;
            ctx.spec.ingress = None;
            let children = desired(&ctx).expect("builds");
            let keys: Vec<String> = children.iter().map(Child::key).collect();
            assert!(!keys.iter().any(|k| k.contains("turn")), "{keys:?}");
            assert!(!keys.iter().any(|k| k.starts_with("Certificate/")), "{keys:?}");
            assert!(!keys.iter().any(|k| k.starts_with("Ingress/")), "{keys:?}");
        }
    }

    /// Walks every JSON object; secret-carrying env vars must only ever use `valueFrom`.
    fn check_no_literal(v: &serde_json::Value, secret_names: &[&str]) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(n)) = m.get("name")
                    && secret_names.contains(&n.as_str())
                    && m.contains_key("value")
                {
                    panic!("{n} has a literal value: {v}");
                }
                m.values().for_each(|x| check_no_literal(x, secret_names));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| check_no_literal(x, secret_names)),
            serde_json::Value::String(s) => {
                // The TURN secret line only exists at container start, as a printf format.
                if let Some(i) = s.find("static-auth-secret=") {
                    assert!(
                        s[i..].starts_with("static-auth-secret=%s"),
                        "secret line in an object: {s}"
                    );
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_secret_value_is_ever_literal() {
        let names = [
            "JWT_APP_SECRET",
            "TURN_CREDENTIALS",
            "JICOFO_AUTH_PASSWORD",
            "JVB_AUTH_PASSWORD",
            "TURN_SECRET",
            "LIVEKIT_API_KEY",
            "LIVEKIT_API_SECRET",
            "REDIS_PASSWORD",
            "LIVEKIT_REDIS_SENTINEL_PASSWORD",
        ];
        for ctx in both_engines() {
            for c in desired(&ctx).expect("builds") {
                let v = serde_json::to_value(&c.object).expect("json");
                check_no_literal(&v, &names);
                let text = v.to_string();
                // Redis's password line only exists at container start, as a printf format.
                for (i, _) in text.match_indices("requirepass ") {
                    assert!(text[i..].starts_with("requirepass %s"), "{}: {text}", c.key());
                }
            }
        }
    }

    #[test]
    fn is_deterministic() {
        for ctx in both_engines() {
            assert_eq!(desired(&ctx).expect("a"), desired(&ctx).expect("b"));
        }
    }

    #[test]
    fn livekit_children_are_livekits_only() {
        let [jitsi, livekit] = both_engines();
        let keys = |ctx: &Ctx| -> Vec<String> { desired(ctx).expect("builds").iter().map(Child::key).collect() };
        let (j, l) = (keys(&jitsi), keys(&livekit));
        for k in [
            "Deployment/meet-web",
            "Service/meet-web",
            "Ingress/meet-web",
            "Deployment/meet-turn",
        ] {
            assert!(j.contains(&k.to_string()) && l.contains(&k.to_string()), "{k}");
        }
        for k in [
            "Deployment/meet-redis",
            "Service/meet-signalling",
            "ConfigMap/meet-sfu-0-config",
        ] {
            assert!(l.contains(&k.to_string()) && !j.contains(&k.to_string()), "{k}");
        }
        assert!(
            !l.iter().any(|k| k.contains("prosody") || k.contains("jicofo")),
            "{l:?}"
        );
        assert_eq!(signalling(&livekit.spec).0, ["web", "redis"]);
        assert_eq!(signalling(&jitsi.spec).0, ["prosody", "jicofo", "web"]);
    }
}
