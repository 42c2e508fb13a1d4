//! The Bridge reconciler: read → validate → build → apply → prune → status.
//! Only this module and `apply` talk to the API; everything it decides comes from pure
//! functions fed with what the caches hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use super::conditions::{condition as cond, keep_transition_times};
use super::{Context, Error};
use crate::api::Exposure;
use crate::api::bridge::{Bridge, BridgeStatus, SfuStatus};
pub use crate::bridge::context::OWNER_KIND;
use crate::bridge::context::{Ctx, SfuReplica};
use crate::bridge::{build, ca, certificate, secrets};
use crate::labels::{self, FIELD_MANAGER};
use crate::meeting::{self, capacity};
use crate::{apply, clock, turn};

/// One reconcile of one Bridge.
pub async fn reconcile(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", bridge = %format!("{}/{}", bridge.namespace().unwrap_or_default(), bridge.name_any()));
    let started = std::time::Instant::now();
    let result = reconcile_bridge(bridge, cx.clone()).instrument(span).await;
    cx.metrics.reconcile_done(
        "Bridge",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(Error::reason),
    );
    result
}

async fn reconcile_bridge(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    if !cx.caches_synced() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
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

    let now = cx.clock.now();
    let all_meetings = cx.meetings.state();
    let hosted = meeting::hosted_by(all_meetings.iter().map(|m| &**m), &ns, &name, &bridge.spec);
    let reservation = capacity::plan(&bridge.spec.sfu, hosted.iter().map(|m| &m.spec), now);
    let sfu = plan_sfu(
        &bridge,
        reservation.replicas,
        &cx.nodes,
        &cx.store(super::Kind::Service),
        &ns,
        &name,
    );
    let owner = bridge
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let mut ctx = Ctx::new(&name, &ns, owner, &bridge.spec, sfu);
    ctx.room_limits = meeting::room_limits(
        hosted
            .iter()
            .map(|m| (m.metadata.name.as_deref().unwrap_or_default(), &m.spec)),
        Some(now),
    );
    ctx.secrets_revision = ensure_generated_secret(&cx, &bridge, &ctx).await?;
    let tls = tls_state(&cx, &bridge, &ctx).await?;
    ctx.tls_secret = tls.secret.clone();
    conditions.push(tls.condition.clone());
    let desired = build::desired(&ctx).map_err(|e| Error::Build(e.to_string()))?;
    let sfu = &ctx.sfu;

    // Apply what differs from the caches; nothing is sent for what already matches.
    let mut wanted = BTreeSet::new();
    let mut writes = 0;
    // Children the API server refuses for a reason in the cluster (a NodePort another Service
    // holds): reported as a condition, retried later, never a hot error loop.
    let mut refused = Vec::new();
    for child in &desired {
        if child.resource.group == "cert-manager.io" && !cx.cert_manager {
            continue;
        }
        wanted.insert((child.resource.kind.clone(), child.name().to_string()));
        let live = cx.live(child);
        match apply::apply(&cx.client, child, live.as_deref()).await {
            Ok(true) => writes += 1,
            Ok(false) => {}
            Err(kube::Error::Api(s)) if s.code == 422 => refused.push(format!("{}: {}", child.key(), s.message)),
            Err(e) => return Err(Error::Apply(child.key(), e)),
        }
    }
    if !refused.is_empty() {
        let reason = if refused.iter().any(|r| r.contains("already allocated")) {
            "PortInUse"
        } else {
            "ChildRefused"
        };
        conditions.push(cond(
            "ChildrenApplied",
            false,
            reason,
            &format!("the API server refused: {}", refused.join("; ")),
            generation,
        ));
    }
    for keep in tls.keep.iter().chain([&ctx.secret_name]) {
        wanted.insert(("Secret".to_string(), keep.clone()));
    }
    prune(&cx, &bridge, &ns, &uid, &wanted).await?;

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

    let status = BridgeStatus {
        observed_generation: generation,
        conditions,
        url: Some(format!("https://{}/", bridge.spec.domain)),
        turn_uris: turn_uris(&ctx),
        sfu: Some(SfuStatus {
            replicas: sfu.len() as i32,
            ready_replicas: ready_sfu,
            endpoints: sfu.iter().map(endpoint).collect(),
            reserved_participants: reservation.reserved,
            available_participants: reservation.available(&bridge.spec.sfu),
        }),
    };
    if let Some(sfu) = &status.sfu {
        cx.metrics.set_bridge_capacity(
            &ns,
            &name,
            i64::from(sfu.reserved_participants),
            i64::from(sfu.available_participants),
        );
    }
    for kind in super::Kind::ALL {
        cx.metrics
            .set_managed_objects(&kind.resource().kind, cx.store(kind).len());
    }
    let status_written = patch_status(&cx, &bridge, &ns, status).await?;
    tracing::info!(writes, status_written, "reconciled");
    // Wake exactly when something is due: a certificate renewal or a Meeting entering or
    // leaving its reservation.
    let retry = (!refused.is_empty()).then(|| now + chrono::Duration::seconds(60));
    let due = [tls.renew_at, reservation.next_change, retry]
        .into_iter()
        .flatten()
        .min();
    Ok(match due {
        Some(at) => Action::requeue(clock::until(cx.clock.now(), at)),
        None => Action::await_change(),
    })
}

/// Whether a Bridge reads the Secret `name` (its own TLS Secret or the one cert-manager writes).
pub fn uses_secret(bridge: &Bridge, name: &str) -> bool {
    match bridge.spec.tls.as_ref() {
        Some(t) if t.secret_name.as_deref() == Some(name) => true,
        Some(t) if t.issuer_ref.is_some() => name == labels::child_name(&bridge.name_any(), "tls"),
        _ => false,
    }
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
    count: i32,
    nodes: &Store<Node>,
    services: &Store<DynamicObject>,
    ns: &str,
    name: &str,
) -> Vec<SfuReplica> {
    let sfu = &bridge.spec.sfu;
    let base = sfu.media.base_port();
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

/// Creates the generated Secret once, with random values, and replaces values only when a
/// rotation is requested (see [`secrets::ROTATE_ANNOTATION`]). Returns the rotation the values
/// belong to. Values survive restarts and GitOps never sees them.
async fn ensure_generated_secret(cx: &Context, bridge: &Bridge, ctx: &Ctx) -> Result<Option<String>, Error> {
    let (name, ns) = (&ctx.secret_name, &ctx.namespace);
    let requested = bridge.annotations().get(secrets::ROTATE_ANNOTATION).cloned();
    let live = cx.cached_secret(ns, name);
    let current = live
        .as_ref()
        .and_then(|l| l.annotations().get(secrets::ROTATION_ANNOTATION).cloned());
    let rotate: Vec<&str> = match (&live, &requested) {
        (None, _) => secrets::KEYS.to_vec(),
        (Some(_), Some(r)) if current.as_ref() != Some(r) => secrets::keys_to_rotate(
            bridge
                .annotations()
                .get(secrets::ROTATE_KEYS_ANNOTATION)
                .map(String::as_str),
        ),
        _ => return Ok(current),
    };
    let old = |k: &str| live.as_deref().and_then(|l| super::secret_value(l, k));
    let data = secrets::KEYS
        .iter()
        .map(|k| {
            let value = match old(k) {
                Some(v) if !rotate.contains(k) => v,
                _ => random_secret().into_bytes(),
            };
            (k.to_string(), ByteString(value))
        })
        .collect();
    let mut metadata = ctx.meta(secrets::SUFFIX, labels::Component::Secrets);
    metadata.annotations = requested
        .clone()
        .map(|r| [(secrets::ROTATION_ANNOTATION.to_string(), r)].into());
    let secret = Secret {
        metadata,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    super::put_secret(&cx.client, secret, live.as_deref()).await?;
    if live.is_some() {
        cx.event(
            &bridge.object_ref(&()),
            EventType::Normal,
            "SecretsRotated",
            "RotateSecrets",
            format!(
                "rotated {} in Secret {name}; pods using them restart",
                rotate.join(", ")
            ),
        )
        .await;
    }
    Ok(requested)
}

/// 32 random bytes, URL-safe base64: fits every component's config syntax.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the serving certificate comes from, whether it is usable, and when to look again.
struct TlsState {
    secret: Option<String>,
    condition: Condition,
    /// When the operator must renew what it issued (own CA only).
    renew_at: Option<DateTime<Utc>>,
    /// Secrets of this mode that pruning must keep.
    keep: Vec<String>,
}

impl TlsState {
    fn not_ready(reason: &str, message: String, generation: Option<i64>, keep: Vec<String>) -> TlsState {
        TlsState {
            secret: None,
            condition: cond("CertificateReady", false, reason, &message, generation),
            renew_at: None,
            keep,
        }
    }
}

async fn tls_state(cx: &Context, bridge: &Bridge, ctx: &Ctx) -> Result<TlsState, Error> {
    let generation = bridge.metadata.generation;
    let tls = bridge.spec.tls.clone().unwrap_or_default();
    let tls_name = certificate::tls_secret_name(ctx);
    let (secret_name, managed) = match (&tls.issuer_ref, &tls.secret_name) {
        (Some(_), _) if !cx.cert_manager => {
            return Ok(TlsState::not_ready(
                "CertManagerMissing",
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
    let api: Api<Secret> = Api::namespaced(cx.client.clone(), &ctx.namespace);
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
        return Ok(TlsState::not_ready(reason, msg, generation, keep));
    };
    let data = secret.data.unwrap_or_default();
    let has = |k: &str| data.get(k).is_some_and(|v| v.0.starts_with(b"-----BEGIN"));
    if !(has("tls.crt") && has("tls.key")) {
        let msg = format!("Secret {secret_name} lacks PEM tls.crt and tls.key");
        return Ok(TlsState::not_ready("SecretMalformed", msg, generation, keep));
    }
    Ok(TlsState {
        secret: Some(secret_name.clone()),
        condition: cond(
            "CertificateReady",
            true,
            "Valid",
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
    let secrets = cx.store(super::Kind::Secret);
    let cached =
        |name: &str| secrets.get(&ObjectRef::new_with(name, super::Kind::Secret.resource()).within(&ctx.namespace));
    let live_ca = cached(&ca_name);
    let live_tls = cached(&tls_name);

    let mut ca_pem = live_ca
        .as_deref()
        .and_then(|o| pem_pair(o, ca::CA_CERT_KEY, ca::CA_KEY_KEY));
    if let Some(why) = ca::check_ca(ca_pem.as_ref(), now) {
        let fresh = ca::new_ca(&ctx.namespace, &ctx.name, now)?;
        let data = [(ca::CA_CERT_KEY, &fresh.cert), (ca::CA_KEY_KEY, &fresh.key)];
        write_secret(cx, ctx, &ca_name, "Opaque", &data, live_ca.as_deref()).await?;
        tracing::info!(reason = why.as_str(), "issued a new CA");
        ca_pem = Some(fresh);
    }
    let ca_pem = ca_pem.ok_or(Error::MissingField("CA certificate"))?;

    let serving = live_tls.as_deref().and_then(|o| pem_pair(o, "tls.crt", "tls.key"));
    let serving = match ca::check_serving(serving.as_ref(), &ca_pem, &ctx.spec.domain, now) {
        None => serving.ok_or(Error::MissingField("serving certificate"))?,
        Some(why) => {
            let fresh = ca::issue(&ca_pem, &ctx.spec.domain, now)?;
            let data = [
                ("tls.crt", &fresh.cert),
                ("tls.key", &fresh.key),
                (ca::CA_CERT_KEY, &ca_pem.cert),
            ];
            write_secret(cx, ctx, &tls_name, "kubernetes.io/tls", &data, live_tls.as_deref()).await?;
            let until = ca::inspect(&fresh.cert)?.not_after;
            cx.event(
                &bridge.object_ref(&()),
                EventType::Normal,
                "CertificateIssued",
                "IssueCertificate",
                format!(
                    "Conclave CA issued a certificate for {} into Secret {tls_name} ({}), valid until {until}",
                    ctx.spec.domain,
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
            "CertificateReady",
            true,
            "IssuedByConclaveCA",
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
    super::put_secret(&cx.client, secret, live).await
}

/// Deletes children of this Bridge that are no longer desired. Only objects carrying this
/// Bridge's labels and controlled by its uid are candidates, so nothing else is ever touched.
async fn prune(
    cx: &Context,
    bridge: &Bridge,
    ns: &str,
    uid: &str,
    wanted: &BTreeSet<(String, String)>,
) -> Result<(), Error> {
    let name = bridge.name_any();
    for kind in super::Kind::ALL {
        for obj in cx.store(kind).state() {
            let is_ours = obj.metadata.namespace.as_deref() == Some(ns)
                && obj.labels().get(labels::INSTANCE) == Some(&name)
                && obj.labels().get(labels::OWNER_KIND).map(String::as_str) == Some(OWNER_KIND)
                && obj
                    .owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid);
            let obj_name = obj.name_any();
            // One already terminating (a StatefulSet draining its pods) needs no second delete.
            let terminating = obj.metadata.deletion_timestamp.is_some();
            if !is_ours || terminating || wanted.contains(&(kind.resource().kind, obj_name.clone())) {
                continue;
            }
            tracing::info!(kind = %kind.resource().kind, name = %obj_name, "pruning child no longer desired");
            apply::delete(&cx.client, &kind.resource(), &obj)
                .await
                .map_err(|e| Error::Apply(obj_name.clone(), e))?;
            // A StatefulSet leaving the pool is an SFU replica draining: its pod's preStop
            // hook lets its conferences finish, bounded by spec.sfu.drainTimeout.
            if kind == super::Kind::StatefulSet {
                cx.event(
                    &bridge.object_ref(&()),
                    EventType::Normal,
                    "SFUDraining",
                    "ScaleDown",
                    format!(
                        "SFU replica {obj_name} leaves the pool; it finishes its conferences (at most {}) before it stops",
                        bridge.spec.sfu.drain_timeout
                    ),
                )
                .await;
            }
        }
    }
    Ok(())
}

fn current_status(bridge: &Bridge) -> BridgeStatus {
    bridge.status.clone().unwrap_or_default()
}

/// Writes status only when it changed; a condition keeps its transition time while its status
/// stays the same, so an unchanged Bridge costs no write.
async fn patch_status(cx: &Context, bridge: &Bridge, ns: &str, mut status: BridgeStatus) -> Result<bool, Error> {
    let old = current_status(bridge);
    keep_transition_times(&mut status.conditions, &old.conditions);
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
    announce_transitions(cx, bridge, &old.conditions, &status.conditions).await;
    Ok(true)
}

/// Reasons a human has to act on; a condition turning False for one of them becomes a
/// Warning Event (once, on the transition).
const ACTIONABLE: [&str; 7] = [
    "PortInUse",
    "ChildRefused",
    "InvalidSpec",
    "SecretNotFound",
    "SecretMalformed",
    "CertManagerMissing",
    "AwaitingAddress",
];

async fn announce_transitions(cx: &Context, bridge: &Bridge, old: &[Condition], new: &[Condition]) {
    for c in new {
        let before = old.iter().find(|o| o.type_ == c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        if c.status == "False" && ACTIONABLE.contains(&c.reason.as_str()) {
            cx.event(
                &bridge.object_ref(&()),
                EventType::Warning,
                &c.reason,
                "Validate",
                c.message.clone(),
            )
            .await;
        } else if c.type_ == "Ready" && c.status == "True" {
            cx.event(
                &bridge.object_ref(&()),
                EventType::Normal,
                "Ready",
                "Reconcile",
                "all components are ready".into(),
            )
            .await;
        }
    }
}

/// Requeue after an error: the reason becomes the log line and an Event, and the retry backs
/// off so a broken apiserver is not hammered.
pub fn error_policy(_bridge: Arc<Bridge>, err: &Error, _cx: Arc<Context>) -> Action {
    super::retry_after(err)
}
