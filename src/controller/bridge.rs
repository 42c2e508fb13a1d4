//! The Bridge reconciler: read → validate → build → apply → prune → status.
//! Only this module and `apply` talk to the API; everything it decides comes from pure
//! functions fed with what the caches hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::{Context, Error, status, tls};
use crate::api::Exposure;
use crate::api::bridge::{Bridge, BridgeStatus, SfuStatus};
pub use crate::bridge::context::OWNER_KIND;
use crate::bridge::context::{Ctx, SfuReplica};
use crate::bridge::{coturn, placement, secrets, sfu as pool};
use crate::conditions::{Reason, Type, condition as cond};
use crate::labels;
use crate::meeting::{self, capacity};
use crate::{apply, clock, engine, turn};

/// One reconcile of one Bridge.
pub async fn reconcile(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", bridge = %format!("{}/{}", bridge.namespace().unwrap_or_default(), bridge.name_any()));
    let started = std::time::Instant::now();
    let result = reconcile_bridge(bridge, cx.clone()).instrument(span).await;
    cx.metrics.reconcile_done(
        "Bridge",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(|e| e.reason().as_str()),
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
            Type::Ready,
            false,
            Reason::InvalidSpec,
            &format!("spec.turn: {bad:?} is not a CIDR"),
            generation,
        ));
        patch_status(
            &cx,
            &bridge,
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
    let on_bridge = cx.meetings_of(&ns, &name);
    let hosted = meeting::hosted_by(on_bridge.iter().map(|m| &**m), &ns, &name, &bridge.spec);
    let reservation = capacity::plan(&bridge.spec.sfu, hosted.iter().map(|m| &m.spec), now);
    let nodes = cx.nodes.state();
    let services = cx.store(super::Kind::Service);
    let sfu = placement::plan(
        &bridge.spec,
        &name,
        reservation.replicas,
        nodes.iter().map(|n| &**n),
        |svc| lb_address(&services, &ns, svc),
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
    let tls = tls::tls_state(&cx, &bridge, &ctx).await?;
    ctx.tls_secret = tls.secret.clone();
    conditions.push(tls.condition.clone());
    let desired = engine::desired(&ctx).map_err(|e| Error::Build(e.to_string()))?;
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
            Reason::PortInUse
        } else {
            Reason::ChildRefused
        };
        conditions.push(cond(
            Type::ChildrenApplied,
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
    let (workloads, described) = engine::signalling(bridge.spec.engine);
    let signalling = workloads.iter().all(|w| ready(super::Kind::Deployment, w));
    conditions.push(cond(
        Type::SignallingReady,
        signalling,
        if signalling { Reason::Running } else { Reason::Starting },
        described,
        generation,
    ));
    let ready_replicas: Vec<bool> = sfu
        .iter()
        .map(|r| ready(super::Kind::StatefulSet, &pool::suffix(r)))
        .collect();
    let ready_sfu = ready_replicas.iter().filter(|r| **r).count() as i32;
    let addressed = sfu.iter().all(|r| !r.advertise.is_empty());
    // The pool serves once its minimum (`sfu.replicas`) runs; replicas added for a
    // reservation are capacity ahead of time, and while they start the Bridge stays Ready, so
    // new Meetings still get their links.
    let base = usize::try_from(bridge.spec.sfu.replicas).unwrap_or(1).max(1);
    let serving = ready_replicas.iter().take(base).all(|r| *r);
    let sfu_ok = serving && addressed;
    let sfu_reason = if !addressed {
        Reason::AwaitingAddress
    } else if !serving {
        Reason::Starting
    } else if ready_sfu < sfu.len() as i32 {
        Reason::Scaling
    } else {
        Reason::Running
    };
    conditions.push(cond(
        Type::SfuReady,
        sfu_ok,
        sfu_reason,
        &format!("{ready_sfu}/{} replicas ready", sfu.len()),
        generation,
    ));
    let turn_ok = !bridge.spec.turn.enabled || ready_turn(&cx, &bridge, &ns, &name);
    conditions.push(cond(
        Type::TurnReady,
        turn_ok,
        if !bridge.spec.turn.enabled {
            Reason::Disabled
        } else if turn_ok {
            Reason::Running
        } else {
            Reason::Starting
        },
        "coturn",
        generation,
    ));
    let all = conditions.iter().all(|c| c.status == "True");
    conditions.insert(
        0,
        cond(
            Type::Ready,
            all,
            if all { Reason::Ready } else { Reason::NotReady },
            "all components",
            generation,
        ),
    );

    let status = BridgeStatus {
        observed_generation: generation,
        conditions,
        url: Some(format!("https://{}/", bridge.spec.domain)),
        turn_uris: coturn::uris(&ctx),
        sfu: Some(SfuStatus {
            replicas: sfu.len() as i32,
            ready_replicas: ready_sfu,
            endpoints: sfu.iter().map(SfuReplica::endpoint).collect(),
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
            .set_managed_objects(&kind.resource().kind, cx.managed_objects(kind));
    }
    let status_written = patch_status(&cx, &bridge, status).await?;
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

fn ready_turn(cx: &Context, bridge: &Bridge, ns: &str, name: &str) -> bool {
    let n = labels::child_name(name, "turn");
    match bridge.spec.turn.exposure {
        Exposure::HostPort => cx.workload_ready(super::Kind::DaemonSet, ns, &n),
        _ => cx.workload_ready(super::Kind::Deployment, ns, &n),
    }
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

/// Writes status when it changed (see [`status::patch`]) and announces the transitions.
async fn patch_status(cx: &Context, bridge: &Bridge, new: BridgeStatus) -> Result<bool, Error> {
    let conditions = new.conditions.clone();
    let Some(old) = status::patch(cx, bridge, new).await? else {
        return Ok(false);
    };
    announce_transitions(cx, bridge, &old.conditions, &conditions).await;
    Ok(true)
}

/// A condition turning False for a reason a human must act on becomes a Warning Event, and the
/// Bridge turning Ready a Normal one; each once, on the transition.
async fn announce_transitions(cx: &Context, bridge: &Bridge, old: &[Condition], new: &[Condition]) {
    for c in new {
        let before = old.iter().find(|o| o.type_ == c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let actionable = Reason::parse(&c.reason).is_some_and(Reason::needs_action);
        if c.status == "False" && actionable {
            cx.event(
                &bridge.object_ref(&()),
                EventType::Warning,
                &c.reason,
                "Validate",
                c.message.clone(),
            )
            .await;
        } else if c.type_ == Type::Ready.as_str() && c.status == "True" {
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
