//! The Bridge reconciler: read → validate → build → apply → prune → status.
//! Only this module and `apply` talk to the API; everything it decides comes from pure
//! functions fed with what the caches hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::{Context, Error};
use crate::api::Exposure;
use crate::api::bridge::{Bridge, BridgeStatus, SfuStatus};
use crate::bridge::context::{Ctx, OWNER_KIND, SfuReplica};
use crate::bridge::{build, secrets};
use crate::labels::{self, FIELD_MANAGER};
use crate::{apply, turn};

/// The `kind` label of this reconciler's metrics.
const KIND: &str = "Bridge";

/// One reconcile of one Bridge.
pub async fn reconcile(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", bridge = %format!("{}/{}", bridge.namespace().unwrap_or_default(), bridge.name_any()));
    let started = Instant::now();
    let result = reconcile_bridge(bridge, cx.clone()).instrument(span).await;
    cx.metrics.reconcile_done(
        KIND,
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::reason),
    );
    result
}

async fn reconcile_bridge(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    let name = bridge.name_any();
    let ns = bridge.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = bridge.uid().ok_or(Error::MissingField("metadata.uid"))?;

    let mut conditions = Vec::new();
    let generation = bridge.metadata.generation;

    // Validate what admission could not: CIDRs that parse there but not here.
    if let Err(bad) = turn::parse_cidrs(&bridge.spec.turn.denied_peer_cidrs)
        .and(turn::parse_cidrs(&bridge.spec.turn.allowed_peer_cidrs))
    {
        conditions.push(cond(
            "Ready",
            false,
            "InvalidSpec",
            &format!("spec.turn: {bad:?} is not a CIDR"),
            generation,
        ));
        patch_status(
            &cx,
            &bridge,
            &ns,
            BridgeStatus {
                conditions,
                ..current_status(&bridge)
            },
        )
        .await?;
        tracing::info!("reconciled: invalid spec");
        return Ok(Action::await_change());
    }

    let (tls_secret, cert_cond) = tls_state(&cx, &bridge, &ns, &name).await?;
    conditions.push(cert_cond);

    let sfu = plan_sfu(&bridge, &cx.nodes, &cx.store(super::Kind::Service), &ns, &name);
    let owner = bridge
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let ctx = Ctx {
        name: name.clone(),
        namespace: ns.clone(),
        owner,
        spec: bridge.spec.clone(),
        images: bridge.spec.images.resolve(),
        secret_name: labels::child_name(&name, secrets::SUFFIX),
        tls_secret,
        sfu,
        turn_hosts: vec![bridge.spec.domain.clone()],
    };
    ensure_generated_secret(&cx, &ctx).await?;
    let desired = build::desired(&ctx).map_err(|e| Error::Build(e.to_string()))?;
    let sfu = &ctx.sfu;

    // Apply what differs from the caches; nothing is sent for what already matches.
    let mut wanted = BTreeSet::new();
    let mut writes = 0;
    for child in &desired {
        if child.resource.group == "cert-manager.io" && !cx.cert_manager {
            continue;
        }
        let live = cx.live(child);
        if apply::apply(&cx.client, child, live.as_deref())
            .await
            .map_err(|e| Error::Apply(child.key(), e))?
        {
            tracing::debug!(child = %child.key(), "applied");
            writes += 1;
        }
        wanted.insert((child.resource.kind.clone(), child.name().to_string()));
    }
    prune(&cx, &ns, &name, &uid, &wanted, &ctx.secret_name).await?;

    // Status from the caches.
    let ready = |kind, suffix: &str| cx.workload_ready(kind, &ns, &labels::child_name(&name, suffix));
    let signalling = ready(super::Kind::Deployment, "prosody")
        && ready(super::Kind::Deployment, "jicofo")
        && ready(super::Kind::Deployment, "web");
    conditions.push(cond(
        "SignallingReady",
        signalling,
        if signalling { "Running" } else { "Starting" },
        "prosody, jicofo and web",
        generation,
    ));
    let ready_sfu = sfu
        .iter()
        .filter(|r| ready(super::Kind::StatefulSet, &crate::bridge::sfu::suffix(r)))
        .count() as i32;
    let addressed = sfu.iter().all(|r| !r.advertise.is_empty());
    let sfu_ok = ready_sfu == sfu.len() as i32 && addressed;
    let sfu_reason = if !addressed {
        "AwaitingAddress"
    } else if sfu_ok {
        "Running"
    } else {
        "Starting"
    };
    conditions.push(cond(
        "SFUReady",
        sfu_ok,
        sfu_reason,
        &format!("{ready_sfu}/{} replicas ready", sfu.len()),
        generation,
    ));
    let turn_ok = !bridge.spec.turn.enabled || ready_turn(&cx, &bridge, &ns, &name);
    conditions.push(cond(
        "TURNReady",
        turn_ok,
        if !bridge.spec.turn.enabled {
            "Disabled"
        } else if turn_ok {
            "Running"
        } else {
            "Starting"
        },
        "coturn",
        generation,
    ));
    let all = conditions.iter().all(|c| c.status == "True");
    conditions.insert(
        0,
        cond(
            "Ready",
            all,
            if all { "Ready" } else { "NotReady" },
            "all components",
            generation,
        ),
    );

    let capacity = sfu.len() as i32 * bridge.spec.sfu.participants_per_replica;
    let status = BridgeStatus {
        observed_generation: generation,
        conditions,
        url: Some(format!("https://{}/", bridge.spec.domain)),
        turn_uris: turn_uris(&ctx),
        sfu: Some(SfuStatus {
            replicas: sfu.len() as i32,
            ready_replicas: ready_sfu,
            endpoints: sfu.iter().map(endpoint).collect(),
            reserved_participants: 0,
            available_participants: capacity,
        }),
    };
    if let Some(sfu) = &status.sfu {
        let (reserved, available) = (sfu.reserved_participants, sfu.available_participants);
        cx.metrics
            .set_bridge_capacity(&ns, &name, i64::from(reserved), i64::from(available));
    }
    let status_written = patch_status(&cx, &bridge, &ns, status).await?;
    tracing::info!(writes, status_written, "reconciled");
    Ok(Action::await_change())
}

fn endpoint(r: &SfuReplica) -> String {
    match r.advertise.first() {
        Some(a) if a.contains('#') => a.replace('#', ":"),
        Some(a) => format!("{a}:{}", r.port),
        None => format!("<pending>:{}", r.port),
    }
}

/// The TURN URIs clients get: the same hosts and ports prosody hands out.
fn turn_uris(ctx: &Ctx) -> Vec<String> {
    let t = &ctx.spec.turn;
    if !t.enabled {
        return Vec::new();
    }
    let mut v = Vec::new();
    for host in &ctx.turn_hosts {
        v.push(format!("turn:{host}:{}?transport=udp", t.port));
        v.push(format!("turn:{host}:{}?transport=tcp", t.port));
        if ctx.tls_secret.is_some() {
            v.push(format!("turns:{host}:{}?transport=tcp", t.tls_port));
        }
    }
    v
}

fn ready_turn(cx: &Context, bridge: &Bridge, ns: &str, name: &str) -> bool {
    let n = labels::child_name(name, "turn");
    match bridge.spec.turn.exposure {
        Exposure::HostPort => cx.workload_ready(super::Kind::DaemonSet, ns, &n),
        _ => cx.workload_ready(super::Kind::Deployment, ns, &n),
    }
}

/// Works out, for each SFU replica, its port, its node and the address it advertises.
/// Node pinning keeps a replica where it runs so its advertised address stays true; a new
/// replica goes to the eligible node with the fewest replicas.
pub fn plan_sfu(
    bridge: &Bridge,
    nodes: &Store<Node>,
    services: &Store<DynamicObject>,
    ns: &str,
    name: &str,
) -> Vec<SfuReplica> {
    let sfu = &bridge.spec.sfu;
    let base = sfu.media.base_port();
    let count = sfu.replicas;
    let mut eligible: Vec<(String, Option<String>)> = nodes
        .state()
        .iter()
        .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter(|n| sfu.node_selector.iter().all(|(k, v)| n.labels().get(k) == Some(v)))
        .map(|n| (n.name_any(), external_ip(n)))
        .collect();
    eligible.sort();
    (0..count)
        .map(|i| {
            let port = base + i;
            let (node, discovered) = match sfu.media.exposure {
                Exposure::LoadBalancer => (
                    None,
                    lb_address(services, ns, &labels::child_name(name, &format!("sfu-{i}"))),
                ),
                Exposure::HostPort | Exposure::NodePort => {
                    if eligible.is_empty() {
                        (None, None)
                    } else {
                        let (node, ip) = &eligible[(i as usize) % eligible.len()];
                        (Some(node.clone()), ip.clone())
                    }
                }
            };
            let advertise = if sfu.media.advertise_addresses.is_empty() {
                discovered.into_iter().collect()
            } else {
                sfu.media.advertise_addresses.clone()
            };
            SfuReplica {
                index: i,
                port,
                node,
                advertise,
            }
        })
        .collect()
}

fn external_ip(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "ExternalIP")
        .map(|a| a.address.clone())
}

fn lb_address(services: &Store<DynamicObject>, ns: &str, name: &str) -> Option<String> {
    let svc = services.get(&ObjectRef::new_with(name, super::Kind::Service.resource()).within(ns))?;
    let ingress = svc
        .data
        .get("status")?
        .get("loadBalancer")?
        .get("ingress")?
        .as_array()?;
    ingress
        .iter()
        .find_map(|i| i.get("ip").and_then(|v| v.as_str()).map(str::to_string))
}

/// Creates the generated Secret once, with random values. Never updated by the reconciler, so
/// values survive restarts and GitOps never sees them.
async fn ensure_generated_secret(cx: &Context, ctx: &Ctx) -> Result<(), Error> {
    let (name, ns) = (&ctx.secret_name, &ctx.namespace);
    if cx
        .store(super::Kind::Secret)
        .get(&ObjectRef::new_with(name, super::Kind::Secret.resource()).within(ns))
        .is_some()
    {
        return Ok(());
    }
    let data = secrets::KEYS
        .iter()
        .map(|k| (k.to_string(), ByteString(random_secret().into_bytes())))
        .collect();
    let secret = Secret {
        metadata: ctx.meta(secrets::SUFFIX, labels::Component::Secrets),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            &secret,
        )
        .await
    {
        Ok(_) => Ok(()),
        // The cache lagged behind a create of ours: the Secret is there, which is all we need.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::Apply(format!("Secret/{name}"), e)),
    }
}

/// 32 random bytes, URL-safe base64: fits every component's config syntax.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the serving certificate comes from and whether it is usable.
async fn tls_state(cx: &Context, bridge: &Bridge, ns: &str, name: &str) -> Result<(Option<String>, Condition), Error> {
    let generation = bridge.metadata.generation;
    let tls = bridge.spec.tls.clone().unwrap_or_default();
    let (secret_name, managed) = match (&tls.issuer_ref, &tls.secret_name) {
        (Some(_), _) if !cx.cert_manager => {
            return Ok((
                None,
                cond(
                    "CertificateReady",
                    false,
                    "CertManagerMissing",
                    "spec.tls.issuerRef needs cert-manager's CRDs installed in the cluster",
                    generation,
                ),
            ));
        }
        (Some(_), _) => (labels::child_name(name, "tls"), true),
        (None, Some(s)) => (s.clone(), false),
        (None, None) => {
            return Ok((
                None,
                cond(
                    "CertificateReady",
                    false,
                    "CANotImplemented",
                    "Conclave's own CA is not implemented yet; set spec.tls",
                    generation,
                ),
            ));
        }
    };
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let secret = api
        .get_opt(&secret_name)
        .await
        .map_err(|e| Error::Read(format!("Secret/{secret_name}"), e))?;
    let Some(secret) = secret else {
        let (reason, msg) = if managed {
            (
                "Issuing",
                format!("waiting for cert-manager to write Secret {secret_name}"),
            )
        } else {
            (
                "SecretNotFound",
                format!("spec.tls.secretName: Secret {secret_name} does not exist"),
            )
        };
        return Ok((None, cond("CertificateReady", false, reason, &msg, generation)));
    };
    let data = secret.data.unwrap_or_default();
    let has = |k: &str| data.get(k).is_some_and(|v| v.0.starts_with(b"-----BEGIN"));
    if !(has("tls.crt") && has("tls.key")) {
        let msg = format!("Secret {secret_name} lacks PEM tls.crt and tls.key");
        return Ok((
            None,
            cond("CertificateReady", false, "SecretMalformed", &msg, generation),
        ));
    }
    Ok((
        Some(secret_name.clone()),
        cond(
            "CertificateReady",
            true,
            "Valid",
            &format!("Secret {secret_name}"),
            generation,
        ),
    ))
}

/// Deletes children of this Bridge that are no longer desired. Only objects carrying this
/// Bridge's labels and controlled by its uid are candidates, so nothing else is ever touched.
async fn prune(
    cx: &Context,
    ns: &str,
    name: &str,
    uid: &str,
    wanted: &BTreeSet<(String, String)>,
    secret: &str,
) -> Result<(), Error> {
    for kind in super::Kind::ALL {
        for obj in cx.store(kind).state() {
            let is_ours = obj.metadata.namespace.as_deref() == Some(ns)
                && obj.labels().get(labels::INSTANCE).map(String::as_str) == Some(name)
                && obj.labels().get(labels::OWNER_KIND).map(String::as_str) == Some(OWNER_KIND)
                && obj
                    .owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid);
            let obj_name = obj.name_any();
            // One already terminating (a StatefulSet draining its pods) needs no second delete.
            let terminating = obj.metadata.deletion_timestamp.is_some();
            if !is_ours
                || terminating
                || obj_name == secret
                || wanted.contains(&(kind.resource().kind, obj_name.clone()))
            {
                continue;
            }
            tracing::info!(kind = %kind.resource().kind, name = %obj_name, "pruning child no longer desired");
            apply::delete(&cx.client, &kind.resource(), &obj)
                .await
                .map_err(|e| Error::Apply(obj_name, e))?;
        }
    }
    Ok(())
}

fn cond(type_: &str, ok: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

fn current_status(bridge: &Bridge) -> BridgeStatus {
    bridge.status.clone().unwrap_or_default()
}

/// Writes status only when it changed; a condition keeps its transition time while its status
/// stays the same, so an unchanged Bridge costs no write.
async fn patch_status(cx: &Context, bridge: &Bridge, ns: &str, mut status: BridgeStatus) -> Result<bool, Error> {
    let old = current_status(bridge);
    for c in &mut status.conditions {
        if let Some(prev) = old
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    if status == old {
        return Ok(false);
    }
    let api: Api<Bridge> = Api::namespaced(cx.client.clone(), ns);
    let patch = json!({"apiVersion": Bridge::api_version(&()), "kind": Bridge::kind(&()), "status": status});
    api.patch_status(
        &bridge.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::Apply(format!("Bridge/{}/status", bridge.name_any()), e))?;
    Ok(true)
}

/// Requeue after an error: the reason becomes the log line and an Event, and the retry backs
/// off so a broken apiserver is not hammered.
pub fn error_policy(_bridge: Arc<Bridge>, err: &Error, _cx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
