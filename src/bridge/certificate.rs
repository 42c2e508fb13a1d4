//! The cert-manager Certificate for `spec.domain` (and `spec.turn.host` when TURN over TLS is
//! announced there), when `spec.tls.issuerRef` names an issuer. Its Secret is what the Ingress
//! and TURN over TLS use.

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::context::Ctx;
use crate::api::bridge::IssuerKind;
use crate::child::Child;
use crate::labels::Component;

/// The cert-manager Certificate kind.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Name of the Secret cert-manager writes the certificate to.
pub fn tls_secret_name(ctx: &Ctx) -> String {
    ctx.child_name("tls")
}

/// The Certificate, or nothing without an issuer.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let Some(issuer) = ctx.spec.tls.as_ref().and_then(|t| t.issuer_ref.as_ref()) else {
        return Ok(Vec::new());
    };
    let kind = match issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    let meta = ctx.meta("tls", Component::Certificate);
    let value = json!({
        "metadata": meta,
        "spec": {
            "secretName": tls_secret_name(ctx),
            "dnsNames": ctx.certificate_names(),
            "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.group},
            // A fresh key at every renewal, so a leaked key dies with its certificate.
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth"],
            // The Secret carries the operator's labels, so it is recognisably the Bridge's.
            "secretTemplate": {"labels": ctx.labels(Component::Certificate)},
        },
    });
    Ok(vec![Child::dynamic(api_resource(), value)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;

    #[test]
    fn certificate() {
        let ctx = sample_ctx();
        let c = build(&ctx).expect("builds");
        assert_eq!(c.len(), 1);
        let c = &c[0];
        assert_eq!(c.key(), "Certificate/meet-tls");
        assert_eq!(c.resource.api_version, "cert-manager.io/v1");
        assert_eq!(c.resource.plural, "certificates");
        let spec = &c.object.data["spec"];
        assert_eq!(spec["secretName"], "meet-tls");
        assert_eq!(spec["dnsNames"], json!(["meet.example.com", "turn.example.com"]));
        assert_eq!(
            spec["issuerRef"],
            json!({"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(spec["privateKey"]["rotationPolicy"], "Always");
        assert_eq!(
            spec["secretTemplate"]["labels"]["app.kubernetes.io/managed-by"],
            "conclave"
        );
        let v = serde_json::to_value(&c.object).expect("json");
        assert_eq!(v["apiVersion"], "cert-manager.io/v1");
        assert_eq!(v["kind"], "Certificate");
        assert_eq!(tls_secret_name(&ctx), "meet-tls");
    }

    #[test]
    fn turn_names_only_when_turns_is_announced_there() {
        let mut ctx = sample_ctx();
        for (host, enabled, names) in [
            (Some("198.51.100.7"), true, json!(["meet.example.com"])),
            (Some("meet.example.com"), true, json!(["meet.example.com"])),
            (Some("turn.example.com"), false, json!(["meet.example.com"])),
            (None, true, json!(["meet.example.com"])),
        ] {
            ctx.spec.turn.host = host.map(str::to_string);
            ctx.spec.turn.enabled = enabled;
            let c = &build(&ctx).expect("builds")[0];
            assert_eq!(c.object.data["spec"]["dnsNames"], names, "{host:?} {enabled}");
        }
    }

    #[test]
    fn none_without_issuer() {
        let mut ctx = sample_ctx();
        ctx.spec.tls = Some(crate::api::bridge::Tls {
            issuer_ref: None,
            secret_name: Some("mine".into()),
        });
        assert!(build(&ctx).expect("builds").is_empty());
        ctx.spec.tls = None;
        assert!(build(&ctx).expect("builds").is_empty());
    }
}
