//! Where a Bridge's serving certificate comes from, whether it is usable, and when to look
//! again: cert-manager, a Secret the user brings, or Conclave's own CA (issued and renewed here).

use crate::conditions::Condition;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::DynamicObject;
use kube::runtime::events::EventType;

use super::{Context, Error};
use crate::api::bridge::Bridge;
use crate::bridge::context::Ctx;
use crate::bridge::{ca, certificate};
use crate::conditions::{Reason, Type, condition as cond};
use crate::labels;

/// Where the serving certificate comes from, whether it is usable, and when to look again.
pub(super) struct TlsState {
    pub secret: Option<String>,
    pub condition: Condition,
    /// When the operator must renew what it issued (own CA only).
    pub renew_at: Option<DateTime<Utc>>,
    /// Secrets of this mode that pruning must keep.
    pub keep: Vec<String>,
}

impl TlsState {
    fn not_ready(reason: Reason, message: String, generation: Option<i64>, keep: Vec<String>) -> TlsState {
        TlsState {
            secret: None,
            condition: cond(Type::CertificateReady, false, reason, &message, generation),
            renew_at: None,
            keep,
        }
    }
}

pub(super) async fn tls_state(cx: &Context, bridge: &Bridge, ctx: &Ctx) -> Result<TlsState, Error> {
    let generation = bridge.metadata.generation;
    let tls = bridge.spec.tls.clone().unwrap_or_default();
    let tls_name = certificate::tls_secret_name(ctx);
    let (secret_name, managed) = match (&tls.issuer_ref, &tls.secret_name) {
        (Some(_), _) if !cx.cert_manager => {
            return Ok(TlsState::not_ready(
                Reason::CertManagerMissing,
                "spec.tls.issuerRef needs cert-manager's CRDs installed in the cluster".into(),
                generation,
                vec![tls_name],
            ));
        }
        (Some(_), _) => (tls_name.clone(), true),
        (None, Some(s)) => (s.clone(), false),
        (None, None) => return own_ca(cx, bridge, ctx).await,
    };
    let keep = if managed { vec![tls_name] } else { Vec::new() };
    let Some(secret) = cx.tls_secret(&ctx.namespace, &secret_name).await? else {
        let (reason, msg) = if managed {
            (
                Reason::Issuing,
                format!("waiting for cert-manager to write Secret {secret_name}"),
            )
        } else {
            (
                Reason::SecretNotFound,
                format!("spec.tls.secretName: Secret {secret_name} does not exist"),
            )
        };
        return Ok(TlsState::not_ready(reason, msg, generation, keep));
    };
    let data = secret.data.clone().unwrap_or_default();
    let has = |k: &str| data.get(k).is_some_and(|v| v.0.starts_with(b"-----BEGIN"));
    if !(has("tls.crt") && has("tls.key")) {
        let msg = format!("Secret {secret_name} lacks PEM tls.crt and tls.key");
        return Ok(TlsState::not_ready(Reason::SecretMalformed, msg, generation, keep));
    }
    Ok(TlsState {
        secret: Some(secret_name.clone()),
        condition: cond(
            Type::CertificateReady,
            true,
            Reason::Valid,
            &format!("Secret {secret_name}"),
            generation,
        ),
        renew_at: None,
        keep,
    })
}

/// Conclave's own CA: keeps a CA Secret and a serving certificate signed by it, replacing
/// either when it is missing, unreadable, for another name, or due for renewal.
async fn own_ca(cx: &Context, bridge: &Bridge, ctx: &Ctx) -> Result<TlsState, Error> {
    let now = cx.clock.now();
    let generation = bridge.metadata.generation;
    let ca_name = ctx.child_name(ca::CA_SUFFIX);
    let tls_name = certificate::tls_secret_name(ctx);
    let keep = vec![ca_name.clone(), tls_name.clone()];
    let cached = |name: &str| cx.owned_secret(&ctx.namespace, name, &ctx.owner.uid);
    let live_ca = cached(&ca_name);
    let live_tls = cached(&tls_name);

    let mut ca_pem = live_ca
        .as_ref()
        .and_then(|o| pem_pair(o, ca::CA_CERT_KEY, ca::CA_KEY_KEY));
    let issue_ca = ca::check_ca(ca_pem.as_ref(), now);
    if let Some(why) = issue_ca {
        let fresh = ca::new_ca(&ctx.namespace, &ctx.name, now)?;
        let data = [(ca::CA_CERT_KEY, &fresh.cert), (ca::CA_KEY_KEY, &fresh.key)];
        write_secret(cx, ctx, &ca_name, "Opaque", &data, live_ca.as_ref()).await?;
        tracing::info!(reason = why.as_str(), "issued a new CA");
        ca_pem = Some(fresh);
    }
    let ca_pem = ca_pem.ok_or(Error::MissingField("CA certificate"))?;
    let ca_data = [(ca::CA_CERT_KEY, &ca_pem.cert), (ca::CA_KEY_KEY, &ca_pem.key)];
    // A key added by hand is removed; the certificate and key stay exactly as they are.
    if issue_ca.is_none() && live_ca.as_ref().is_some_and(|l| !same_keys(l, &ca_data)) {
        write_secret(cx, ctx, &ca_name, "Opaque", &ca_data, live_ca.as_ref()).await?;
    }

    let serving = live_tls.as_ref().and_then(|o| pem_pair(o, "tls.crt", "tls.key"));
    let names = ctx.certificate_names();
    let serving = match ca::check_serving(serving.as_ref(), &ca_pem, &names, now) {
        None => {
            let serving = serving.ok_or(Error::MissingField("serving certificate"))?;
            let data = [
                ("tls.crt", &serving.cert),
                ("tls.key", &serving.key),
                (ca::CA_CERT_KEY, &ca_pem.cert),
            ];
            if live_tls.as_ref().is_some_and(|l| !same_keys(l, &data)) {
                write_secret(cx, ctx, &tls_name, "kubernetes.io/tls", &data, live_tls.as_ref()).await?;
            }
            serving
        }
        Some(why) => {
            let fresh = ca::issue(&ca_pem, &names, now)?;
            let data = [
                ("tls.crt", &fresh.cert),
                ("tls.key", &fresh.key),
                (ca::CA_CERT_KEY, &ca_pem.cert),
            ];
            write_secret(cx, ctx, &tls_name, "kubernetes.io/tls", &data, live_tls.as_ref()).await?;
            let until = ca::inspect(&fresh.cert)?.not_after;
            cx.event(
                &bridge.object_ref(&()),
                EventType::Normal,
                "CertificateIssued",
                "IssueCertificate",
                format!(
                    "Conclave CA issued a certificate for {} into Secret {tls_name} ({}), valid until {until}",
                    names.join(", "),
                    why.as_str()
                ),
            )
            .await;
            fresh
        }
    };
    let info = ca::inspect(&serving.cert)?;
    let ca_info = ca::inspect(&ca_pem.cert)?;
    let renew_at = ca::renew_at(&info, ca::SERVING_RENEW_BEFORE).min(ca::renew_at(&ca_info, ca::CA_RENEW_BEFORE));
    Ok(TlsState {
        secret: Some(tls_name.clone()),
        condition: cond(
            Type::CertificateReady,
            true,
            Reason::IssuedByConclaveCa,
            &format!(
                "Secret {tls_name}, signed by the CA in Secret {ca_name} (clients must trust its ca.crt); renewal at {}",
                renew_at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            generation,
        ),
        renew_at: Some(renew_at),
        keep,
    })
}

/// A certificate and key from a cached Secret, when both keys hold text.
fn pem_pair(obj: &DynamicObject, cert: &str, key: &str) -> Option<ca::Pem> {
    let field = |k: &str| String::from_utf8(super::secret_value(obj, k)?).ok();
    Some(ca::Pem {
        cert: field(cert)?,
        key: field(key)?,
    })
}

/// Whether a cached Secret has exactly the keys of `data`.
fn same_keys(obj: &DynamicObject, data: &[(&str, &String)]) -> bool {
    super::secret_keys(obj) == data.iter().map(|(k, _)| k.to_string()).collect()
}

/// Writes one of the certificate Secrets (see [`super::put_secret`]).
async fn write_secret(
    cx: &Context,
    ctx: &Ctx,
    name: &str,
    type_: &str,
    data: &[(&str, &String)],
    live: Option<&DynamicObject>,
) -> Result<(), Error> {
    let mut meta = ctx.meta(ca::CA_SUFFIX, labels::Component::Certificate);
    meta.name = Some(name.to_string());
    let secret = Secret {
        metadata: meta,
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    super::put_secret(&cx.client, secret, live.map(|l| &l.metadata)).await
}
