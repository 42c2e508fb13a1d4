//! `conclave render`: every object the operator would create for some Bridges and Meetings,
//! offline and deterministically, so a reviewer sees in a pull request what a change does.
//! Values the operator generates in the cluster (secrets, certificates, join tokens) are shown
//! as references, never invented here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde::Deserialize;

use crate::api::bridge::Engine;
use crate::api::meeting::KeyDistribution;
use crate::api::{Bridge, Meeting};
use crate::bridge::context::{Cluster, Ctx};
use crate::bridge::{ca, certificate, placement, secrets};
use crate::engine;
use crate::labels::Component;
use crate::meeting::{capacity, credentials, e2ee_key, validate};

/// What stands in for the uid the API server assigns to a parent.
const UID_PLACEHOLDER: &str = "<assigned by the API server>";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {0}: {1}")]
    Parse(usize, String),
    #[error("document {0}: kind {1:?} is not a Bridge or Meeting of conclave.dev/v1alpha1")]
    Kind(usize, String),
    #[error("{0}: metadata.name is required")]
    Name(String),
    #[error("Bridge {0}: {1}")]
    Build(String, String),
    #[error("writing YAML: {0}")]
    Yaml(String),
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Renders the children of every Bridge and Meeting in `docs` (multi-document YAML). The SFU
/// pool is sized for the Meetings given as it would be at `at`; without `at`, at its minimum.
/// Objects without a namespace are placed in `default_namespace`.
/// `cluster` is what the operator's flags say about the cluster (DNS domain, IPv6).
pub fn render(
    docs: &str,
    default_namespace: &str,
    at: Option<DateTime<Utc>>,
    cluster: &Cluster,
) -> Result<String, RenderError> {
    let mut bridges = Vec::new();
    let mut meetings = Vec::new();
    for (i, doc) in serde_saphyr::from_multiple::<serde_json::Value>(docs)
        .map_err(|e| RenderError::Parse(1, e.to_string()))?
        .into_iter()
        .enumerate()
    {
        let n = i + 1;
        if doc.is_null() {
            continue;
        }
        let head: Head = serde_json::from_value(doc.clone()).map_err(|e| RenderError::Parse(n, e.to_string()))?;
        match (head.api_version.as_str(), head.kind.as_str()) {
            ("conclave.dev/v1alpha1", "Bridge") => {
                let mut b: Bridge = serde_json::from_value(doc).map_err(|e| RenderError::Parse(n, e.to_string()))?;
                b.metadata
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
                bridges.push(b);
            }
            ("conclave.dev/v1alpha1", "Meeting") => {
                let mut m: Meeting = serde_json::from_value(doc).map_err(|e| RenderError::Parse(n, e.to_string()))?;
                m.metadata
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
                meetings.push(m);
            }
            _ => return Err(RenderError::Kind(n, format!("{}/{}", head.api_version, head.kind))),
        }
    }
    let mut out = Vec::new();
    for b in &bridges {
        out.extend(render_bridge(b, &meetings, at, cluster)?);
    }
    for m in &meetings {
        let engine = bridges
            .iter()
            .find(|b| {
                b.metadata.name.as_deref() == Some(&m.spec.bridge) && b.metadata.namespace == m.metadata.namespace
            })
            .map(|b| b.spec.engine);
        out.extend(render_meeting(m, engine)?);
    }
    let docs: Result<Vec<String>, _> = out.iter().map(serde_saphyr::to_string).collect();
    Ok(docs.map_err(|e| RenderError::Yaml(e.to_string()))?.join("---\n"))
}

fn owner<K: Resource<DynamicType = ()>>(name: &str) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: name.to_string(),
        uid: UID_PLACEHOLDER.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn render_bridge(
    bridge: &Bridge,
    meetings: &[Meeting],
    at: Option<DateTime<Utc>>,
    cluster: &Cluster,
) -> Result<Vec<serde_json::Value>, RenderError> {
    let name = bridge
        .metadata
        .name
        .clone()
        .ok_or_else(|| RenderError::Name("Bridge".into()))?;
    let ns = bridge.metadata.namespace.clone().unwrap_or_default();
    let hosted = crate::meeting::hosted_by(meetings, &ns, &name, &bridge.spec);
    let replicas = match at {
        Some(now) => capacity::plan(&bridge.spec.sfu, hosted.iter().map(|m| &m.spec), now).replicas,
        None => bridge.spec.sfu.replicas,
    };
    // Offline there are no nodes and no load balancers: addresses come only from the spec.
    let sfu = placement::plan(
        &bridge.spec,
        &name,
        replicas,
        [],
        &Default::default(),
        at.unwrap_or_default(),
        |_| None,
    )
    .replicas;
    let mut ctx = Ctx::new(&name, &ns, owner::<Bridge>(&name), &bridge.spec, sfu, cluster);
    ctx.turn_hosts = placement::turn_hosts(&bridge.spec, [], &placement::LoadBalancer::default());
    ctx.room_limits = crate::meeting::room_limits(
        hosted
            .iter()
            .map(|m| (m.metadata.name.as_deref().unwrap_or_default(), &m.spec)),
        at,
    );
    if bridge.spec.engine == Engine::LiveKit {
        let bookings: Vec<validate::Booking<'_>> = meetings
            .iter()
            .filter(|m| m.metadata.namespace.as_deref() == Some(&ns) && m.spec.bridge == name)
            .map(validate::Booking::of)
            .collect();
        ctx.open_rooms = crate::meeting::open_rooms(&bookings, &name, &bridge.spec, at).0;
    }
    let tls = bridge.spec.tls.clone().unwrap_or_default();
    ctx.tls_secret = Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| certificate::tls_secret_name(&ctx)),
    );

    let mut out = vec![reference_secret(
        ctx.meta(secrets::SUFFIX, Component::Secrets),
        secrets::keys(bridge.spec.engine),
        "generated once in the cluster by the operator",
    )];
    if tls.issuer_ref.is_none() && tls.secret_name.is_none() {
        out.push(reference_secret(
            ctx.meta(ca::CA_SUFFIX, Component::Certificate),
            &[ca::CA_CERT_KEY, ca::CA_KEY_KEY],
            "Conclave CA, created in the cluster by the operator",
        ));
        let mut tls_meta = ctx.meta("tls", Component::Certificate);
        tls_meta.name = ctx.tls_secret.clone();
        out.push(reference_secret(
            tls_meta,
            &["tls.crt", "tls.key", ca::CA_CERT_KEY],
            "issued and renewed in the cluster by the Conclave CA",
        ));
    }
    for child in engine::desired(&ctx).map_err(|e| RenderError::Build(name.clone(), e.to_string()))? {
        out.push(serde_json::to_value(&child.object).map_err(|e| RenderError::Yaml(e.to_string()))?);
    }
    Ok(out)
}

/// The Meeting's Secrets as references. The engine is its Bridge's, when the Bridge is among
/// the documents (Jitsi otherwise, the default engine).
fn render_meeting(meeting: &Meeting, engine: Option<Engine>) -> Result<Vec<serde_json::Value>, RenderError> {
    let name = meeting
        .metadata
        .name
        .clone()
        .ok_or_else(|| RenderError::Name("Meeting".into()))?;
    let ns = meeting.metadata.namespace.clone().unwrap_or_default();
    let meta = credentials::meta(&name, &ns, owner::<Meeting>(&name));
    let keys = credentials::keys(&meeting.spec);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let livekit = engine == Some(Engine::LiveKit);
    let with_key = livekit && meeting.spec.key_distribution == KeyDistribution::Link;
    let origin = match (livekit, with_key) {
        (false, _) => "join link signed in the cluster with the Bridge's app secret",
        (true, true) => {
            "join link signed in the cluster with the Bridge's LiveKit API secret, the Meeting's E2EE passphrase in its fragment"
        }
        (true, false) => "join link signed in the cluster with the Bridge's LiveKit API secret, without a key",
    };
    let mut out = vec![reference_secret(meta, &keys, origin)];
    if with_key {
        out.push(reference_secret(
            e2ee_key::meta(&name, &ns, owner::<Meeting>(&name)),
            &[e2ee_key::KEY],
            "the Meeting's E2EE passphrase, generated once in the cluster by the operator",
        ));
    }
    Ok(out)
}

/// A Secret whose values are descriptions of where they come from.
fn reference_secret(
    meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    keys: &[&str],
    origin: &str,
) -> serde_json::Value {
    let data: BTreeMap<&str, String> = keys.iter().map(|k| (*k, format!("<{origin}>"))).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "stringData": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = r#"
apiVersion: conclave.dev/v1alpha1
kind: Bridge
metadata:
  name: meet
  labels:
    argocd.argoproj.io/instance: team-conf
    applyset.kubernetes.io/part-of: applyset-abc
spec:
  domain: meet.example.com
  sfu: {replicas: 1, maxReplicas: 4, participantsPerReplica: 10}
---
apiVersion: conclave.dev/v1alpha1
kind: Meeting
metadata:
  name: standup
spec:
  bridge: meet
  start: "2030-01-07T09:00:00Z"
  end: "2030-01-07T10:00:00Z"
  maxParticipants: 25
  participants: [{name: alice, moderator: true}, {name: bob}]
  guests: {allowed: true}
"#;

    #[test]
    fn output_is_stable_and_carries_no_gitops_labels_or_secrets() {
        let a = render(INPUT, "conf", None, &Cluster::default()).expect("render");
        let b = render(INPUT, "conf", None, &Cluster::default()).expect("render");
        assert_eq!(a, b);
        assert!(!a.contains("argocd.argoproj.io"));
        assert!(!a.contains("applyset.kubernetes.io"));
        assert!(a.contains("name: meet-prosody"));
        assert!(a.contains("name: standup-credentials"));
        assert!(a.contains("<generated once in the cluster by the operator>"));
        assert!(!a.contains("jwt="), "no join token is ever rendered");
        assert_eq!(a.matches("kind: StatefulSet").count(), 1, "the minimum pool");
        assert!(a.contains("standup=25"), "the Meeting's room limit reaches prosody");
    }

    #[test]
    fn at_a_time_the_pool_is_sized_for_the_meetings() {
        let during = render(
            INPUT,
            "conf",
            Some("2030-01-07T09:30:00Z".parse().expect("t")),
            &Cluster::default(),
        )
        .expect("render");
        assert_eq!(during.matches("kind: StatefulSet").count(), 3);
    }

    #[test]
    fn unknown_kinds_are_refused_with_the_document_number() {
        let err = render("apiVersion: v1\nkind: ConfigMap\n", "conf", None, &Cluster::default()).expect_err("refused");
        assert!(err.to_string().starts_with("document 1"), "{err}");
    }
}
