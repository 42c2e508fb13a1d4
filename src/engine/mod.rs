//! Conferencing engines. Each engine turns a Bridge's inputs ([`Ctx`]) into its own children
//! (signalling, web, the SFU pool's pods) and its own network flows; what every engine shares
//! (certificates, TURN, the SFU pool's shape and placement, the base network policies) lives in
//! [`crate::bridge`]. The reconciler and `conclave render` only ever call [`desired`].

pub mod jitsi;
pub mod livekit;

use crate::api::bridge::Engine;
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
    };
    out.extend(coturn::build(ctx)?);
    out.extend(network_policy::build(ctx, policies)?);
    Ok(out)
}

/// The Deployments (by name suffix) that carry the engine's signalling; the Bridge serves
/// nobody until all are ready. With a description for the condition message.
pub fn signalling(engine: Engine) -> (&'static [&'static str], &'static str) {
    match engine {
        Engine::Jitsi => (&jitsi::SIGNALLING, "prosody, jicofo and web"),
    }
}

/// The room size from which the engine's clients cannot keep E2EE on for everyone, if the
/// engine has one.
pub fn e2ee_room_limit(engine: Engine) -> Option<i32> {
    match engine {
        Engine::Jitsi => Some(jitsi::E2EE_MAX_MODE_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;
    use crate::labels;

    #[test]
    fn children_are_unique_owned_and_labelled() {
        let ctx = sample_ctx();
        let children = desired(&ctx).expect("builds");
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
        let mut ctx = sample_ctx();
        ctx.spec.turn.enabled = false;
        ctx.spec.tls = None;
        ctx.spec.ingress = None;
        let children = desired(&ctx).expect("builds");
        let keys: Vec<String> = children.iter().map(Child::key).collect();
        assert!(!keys.iter().any(|k| k.contains("turn")), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("Certificate/")), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("Ingress/")), "{keys:?}");
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
        let ctx = sample_ctx();
        let names = [
            "JWT_APP_SECRET",
            "TURN_CREDENTIALS",
            "JICOFO_AUTH_PASSWORD",
            "JVB_AUTH_PASSWORD",
            "TURN_SECRET",
        ];
        for c in desired(&ctx).expect("builds") {
            check_no_literal(&serde_json::to_value(&c.object).expect("json"), &names);
        }
    }

    #[test]
    fn is_deterministic() {
        let ctx = sample_ctx();
        assert_eq!(desired(&ctx).expect("a"), desired(&ctx).expect("b"));
    }
}
