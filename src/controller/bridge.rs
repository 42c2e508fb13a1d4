//! The Bridge reconciler: read → validate → build → apply → prune → status.
//! Only this module and `apply` talk to the API; everything it decides comes from pure
//! functions fed with what the caches hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::watch::Compact;
use crate::conditions::Condition;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::sfu_pods;
use super::{Context, Error, status, tls};
use crate::api::Exposure;
use crate::api::bridge::{Bridge, BridgeStatus, Engine, SfuStatus};
use crate::apply::ApplyError;
pub use crate::bridge::context::OWNER_KIND;
use crate::bridge::context::{Ctx, SfuReplica};
use crate::bridge::{coturn, placement, secrets, sfu as pool};
use crate::conditions::{Reason, Type, condition as cond};
use crate::labels;
use crate::meeting::{self, capacity, validate};
use crate::{apply, clock, engine, turn};

/// One reconcile of one Bridge.
pub async fn reconcile(bridge: Arc<Bridge>, cx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", bridge = %format!("{}/{}", bridge.namespace().unwrap_or_default(), bridge.name_any()));
    let started = std::time::Instant::now();
    let result = reconcile_bridge(bridge.clone(), cx.clone())
        .instrument(span.clone())
        .await;
    cx.metrics.reconcile_done(
        "Bridge",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(|e| e.reason().as_str()),
    );
    if let Err(err) = &result {
        report_failure(&cx, &bridge, err).instrument(span).await;
    }
    result
}

/// A failed reconcile shows in status: `Reconciled=False` with the error's kind as the reason,
/// and `Ready=False` unless the failure was only the API server being briefly unreachable. The
/// next successful reconcile writes `Reconciled=True` again. A stale cache is not reported:
/// it is retried within a second and says nothing about the Bridge.
async fn report_failure(cx: &Context, bridge: &Bridge, err: &Error) {
    if matches!(err, Error::Stale(_)) {
        return;
    }
    let generation = bridge.metadata.generation;
    let mut status = current_status(bridge);
    status::record_failure(&mut status, err, generation);
    if let Err(e) = patch_status(cx, bridge, status).await {
        tracing::warn!(error = %e, "the failure could not be written into status");
    }
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
        conditions.push(cond(Type::Reconciled, true, Reason::Succeeded, "", generation));
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
    let lb = |svc: &str| load_balancer(&services, &ns, svc);
    let placed = placement::plan(
        &bridge.spec,
        &name,
        reservation.replicas,
        nodes.iter().map(|n| &**n),
        &sfu_pods::current_placement(&cx, &bridge.spec, &ns, &name),
        now,
        |svc| lb(svc).ips.into_iter().next(),
    );
    let sfu = placed.replicas.clone();
    let owner = bridge
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let mut ctx = Ctx::new(&name, &ns, owner, &bridge.spec, sfu, &cx.cluster);
    ctx.turn_hosts = placement::turn_hosts(
        &bridge.spec,
        nodes.iter().map(|n| &**n),
        &lb(&labels::child_name(&name, "turn")),
    );
    ctx.room_limits = meeting::room_limits(
        hosted
            .iter()
            .map(|m| (m.metadata.name.as_deref().unwrap_or_default(), &m.spec)),
        Some(now),
    );
    let bookings: Vec<validate::Booking<'_>> = on_bridge.iter().map(|m| validate::Booking::of(m)).collect();
    let (open_rooms, rooms_change) = match bridge.spec.engine {
        Engine::LiveKit => meeting::open_rooms(&bookings, &name, &bridge.spec, Some(now)),
        Engine::Jitsi => Default::default(),
    };
    ctx.open_rooms = open_rooms;
    ctx.secrets_revision = ensure_generated_secret(&cx, &bridge, &ctx).await?;
    let tls = tls::tls_state(&cx, &bridge, &ctx).await?;
    ctx.tls_secret = tls.secret.clone();
    conditions.push(tls.condition.clone());
    let desired = engine::desired(&ctx).map_err(|e| Error::Build(e.to_string()))?;
    let sfu = &ctx.sfu;

    // Apply what differs from the caches; nothing is sent for what already matches.
    let mut wanted = BTreeSet::new();
    let mut writes = 0;
    // Children written now: the cache still holds their previous version, whose readiness says
    // nothing about the new one (a Deployment rolling out new settings is not ready yet).
    let mut changed = BTreeSet::new();
    let mut written = BTreeSet::new();
    // Children refused for a reason in the cluster (a NodePort another Service holds, a quota,
    // RBAC, an admission policy, a foreign object holding the name): the others are still
    // applied, the refusals become a condition, and they are retried later, never in a hot loop.
    let mut refused: Vec<(Reason, String)> = Vec::new();
    for child in &desired {
        if child.resource.group == "cert-manager.io" && !cx.cert_manager {
            continue;
        }
        wanted.insert((child.resource.kind.clone(), child.name().to_string()));
        let live = cx.live(child);
        match apply::apply(&cx.client, child, live.as_ref()).await {
            Ok(true) => {
                writes += 1;
                changed.insert(child.name().to_string());
                written.insert(child.key());
            }
            Ok(false) => {}
            Err(e @ ApplyError::Foreign { .. }) => refused.push((Reason::ChildConflict, e.to_string())),
            Err(ApplyError::Api(e)) => match (super::refusal(&e), &e) {
                (Some(reason), kube::Error::Api(s)) => {
                    refused.push((reason, format!("{}: {}", child.key(), s.message)))
                }
                _ => return Err(Error::Apply(child.key(), e)),
            },
        }
    }
    if let Some((reason, _)) = refused.first() {
        let all: Vec<&str> = refused.iter().map(|(_, m)| m.as_str()).collect();
        conditions.push(cond(
            Type::ChildrenApplied,
            false,
            *reason,
            &format!("refused: {}", all.join("; ")),
            generation,
        ));
    }
    announce_moves(&cx, &bridge, &ctx, &placed.moves, &written).await;
    for keep in tls.keep.iter().chain([&ctx.secret_name]) {
        wanted.insert(("Secret".to_string(), keep.clone()));
    }
    prune(&cx, &bridge, &ns, &uid, &wanted).await?;
    writes += sfu_pods::delete_left_behind(&cx, &bridge.spec, &ns, &name).await?;

    // Status from the caches.
    let ready = |kind, suffix: &str| {
        let child = labels::child_name(&name, suffix);
        !changed.contains(&child) && cx.workload_ready(kind, &ns, &child)
    };
    let (workloads, described) = engine::signalling(&bridge.spec);
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
    // A load balancer with only a host name (AWS NLB, for one) cannot be advertised: ICE
    // candidates are IP addresses, and the name may resolve to addresses that do not reach the
    // replica. Waiting would never end, so it is said.
    let named_only: Vec<String> = sfu
        .iter()
        .filter(|r| r.advertise.is_empty())
        .filter_map(|r| {
            let svc = ctx.child_name(&pool::suffix(r));
            let l = lb(&svc);
            (l.ips.is_empty() && !l.hostnames.is_empty()).then(|| format!("{svc} ({})", l.hostnames.join(", ")))
        })
        .collect();
    // The pool serves once its minimum (`sfu.replicas`) runs; replicas added for a
    // reservation are capacity ahead of time, and while they start the Bridge stays Ready, so
    // new Meetings still get their links.
    let base = usize::try_from(bridge.spec.sfu.replicas).unwrap_or(1).max(1);
    let serving = ready_replicas.iter().take(base).all(|r| *r);
    let sfu_ok = serving && addressed;
    let (sfu_reason, sfu_message) = if !named_only.is_empty() {
        (
            Reason::AddressNotIp,
            format!(
                "load balancers report only host names, and ICE needs IP addresses: {}; use exposure NodePort or HostPort, or set spec.sfu.media.advertiseAddresses",
                named_only.join("; ")
            ),
        )
    } else if !addressed {
        (
            Reason::AwaitingAddress,
            format!(
                "{ready_sfu}/{} replicas ready; waiting for addresses to advertise",
                sfu.len()
            ),
        )
    } else {
        let reason = if !serving {
            Reason::Starting
        } else if ready_sfu < sfu.len() as i32 {
            Reason::Scaling
        } else {
            Reason::Running
        };
        (reason, format!("{ready_sfu}/{} replicas ready", sfu.len()))
    };
    conditions.push(cond(Type::SfuReady, sfu_ok, sfu_reason, &sfu_message, generation));
    let turn_kind = match bridge.spec.turn.exposure {
        Exposure::HostPort => super::Kind::DaemonSet,
        _ => super::Kind::Deployment,
    };
    conditions.push(turn_condition(&bridge, &ctx, ready(turn_kind, "turn"), generation));
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
    conditions.push(cond(Type::Reconciled, true, Reason::Succeeded, "", generation));

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
    // A Bridge deleted while this reconcile ran (its children's deletions bring reconciles too)
    // has had its series removed when its watch saw the deletion: do not bring them back.
    let deleted = cx.bridges.get(&ObjectRef::from_obj(&*bridge)).is_none();
    if let (Some(sfu), false) = (&status.sfu, deleted) {
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
    // Wake exactly when something is due: a certificate renewal, a Meeting entering or leaving
    // its reservation, or (LiveKit) a room opening or closing.
    let retry = (!refused.is_empty()).then(|| now + chrono::Duration::seconds(60));
    let due = [
        tls.renew_at,
        reservation.next_change,
        rooms_change,
        retry,
        placed.recheck_at,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(match due {
        Some(at) => Action::requeue(clock::until(cx.clock.now(), at)),
        None => Action::await_change(),
    })
}

/// A replica moving to another node gets an Event saying where, why and what it advertises
/// now, once: when its StatefulSet was rewritten. Its old pod drains first (the StatefulSet
/// replaces it gracefully).
async fn announce_moves(
    cx: &Context,
    bridge: &Bridge,
    ctx: &Ctx,
    moves: &[placement::Move],
    written: &BTreeSet<String>,
) {
    for m in moves {
        if !written.contains(&format!("StatefulSet/{}", ctx.child_name(&format!("sfu-{}", m.index)))) {
            continue;
        }
        let advertise = ctx
            .sfu
            .iter()
            .find(|r| r.index == m.index)
            .map(SfuReplica::endpoint)
            .unwrap_or_default();
        cx.event(
            &bridge.object_ref(&()),
            EventType::Normal,
            "SFUMoved",
            "Place",
            format!(
                "SFU replica {} moves from node {} to node {}: {}; it advertises {advertise} from now on, after its pod on {} has drained (at most {})",
                ctx.child_name(&format!("sfu-{}", m.index)),
                m.from,
                m.to,
                m.why.as_str(),
                m.from,
                bridge.spec.sfu.drain_timeout
            ),
        )
        .await;
    }
}

/// Whether a Bridge reads the Secret `name` (its own TLS Secret or the one cert-manager writes).
pub fn uses_secret(bridge: &Bridge, name: &str) -> bool {
    match bridge.spec.tls.as_ref() {
        Some(t) if t.secret_name.as_deref() == Some(name) => true,
        Some(t) if t.issuer_ref.is_some() => name == labels::child_name(&bridge.name_any(), "tls"),
        _ => false,
    }
}

/// `TURNReady`: `AwaitingAddress` until clients have an address to reach TURN at (the TURN
/// servers may run, but nothing can be announced), then the servers' readiness.
fn turn_condition(bridge: &Bridge, ctx: &Ctx, servers_ready: bool, generation: Option<i64>) -> Condition {
    let t = &bridge.spec.turn;
    let (ok, reason, message) = if !t.enabled {
        (true, Reason::Disabled, "TURN is off".to_string())
    } else if ctx.turn_hosts.is_empty() {
        let waiting = match t.exposure {
            Exposure::LoadBalancer => format!(
                "the load balancer of Service {} has no address yet",
                ctx.child_name("turn")
            ),
            Exposure::NodePort | Exposure::HostPort => "no node has an ExternalIP".to_string(),
        };
        (
            false,
            Reason::AwaitingAddress,
            format!("no address to announce TURN at: {waiting}; or set spec.turn.host"),
        )
    } else {
        (
            servers_ready,
            if servers_ready {
                Reason::Running
            } else {
                Reason::Starting
            },
            format!("coturn at {}", ctx.turn_hosts.join(", ")),
        )
    };
    cond(Type::TurnReady, ok, reason, &message, generation)
}

/// What the cached Service `name` says about its load balancer; empty when pending or absent.
fn load_balancer(services: &Store<Compact>, ns: &str, name: &str) -> placement::LoadBalancer {
    services
        .get(&ObjectRef::new_with(name, super::Kind::Service.resource()).within(ns))
        .map(|svc| placement::load_balancer(&svc.data()))
        .unwrap_or_default()
}

/// Creates the generated Secret once, with random values, and replaces values only when a
/// rotation is requested (see [`secrets::ROTATE_ANNOTATION`]) or a key of the engine's set is
/// missing (an operator upgrade that adds one). Returns the rotation the values belong to.
/// Values survive restarts and GitOps never sees them.
async fn ensure_generated_secret(cx: &Context, bridge: &Bridge, ctx: &Ctx) -> Result<Option<String>, Error> {
    let (name, ns) = (&ctx.secret_name, &ctx.namespace);
    let engine = bridge.spec.engine;
    let requested = bridge.annotations().get(secrets::ROTATE_ANNOTATION).cloned();
    let live = cx.owned_secret(ns, name, &ctx.owner.uid);
    let current = live
        .as_ref()
        .and_then(|l| l.annotations().get(secrets::ROTATION_ANNOTATION).cloned());
    let old = |k: &str| live.as_ref().and_then(|l| super::secret_value(l, k));
    let keys = secrets::keys(engine);
    let missing: Vec<&str> = keys.iter().copied().filter(|k| old(k).is_none()).collect();
    // Exactly the generated keys: one added by hand is removed, one deleted by hand is
    // generated again (its old value is gone); every other value is kept as it is.
    let exact = live
        .as_ref()
        .is_some_and(|l| super::secret_keys(l) == keys.iter().map(|k| k.to_string()).collect());
    let rotating = live.is_some() && requested.is_some() && current != requested;
    if !rotating && missing.is_empty() && exact {
        return Ok(current);
    }
    let mut rotate = missing;
    if rotating {
        rotate.extend(secrets::keys_to_rotate(
            engine,
            bridge
                .annotations()
                .get(secrets::ROTATE_KEYS_ANNOTATION)
                .map(String::as_str),
        ));
    }
    let data = keys
        .iter()
        .map(|k| {
            let value = match old(k) {
                Some(v) if !rotate.contains(k) => v,
                _ => secrets::generate(k).into_bytes(),
            };
            (k.to_string(), ByteString(value))
        })
        .collect();
    // The rotation recorded is the one these values belong to: a new Secret takes the
    // requested one as done; filling a missing key keeps the current one.
    let revision = if rotating || live.is_none() { requested } else { current };
    let mut metadata = ctx.meta(secrets::SUFFIX, labels::Component::Secrets);
    metadata.annotations = revision
        .clone()
        .map(|r| [(secrets::ROTATION_ANNOTATION.to_string(), r)].into());
    let secret = Secret {
        metadata,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    super::put_secret(&cx.client, secret, live.as_ref().map(|l| &l.metadata)).await?;
    if rotating {
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
    Ok(revision)
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
                && obj.owner_references().iter().any(|o| {
                    // This Bridge's, or a deleted predecessor's of the same name (see
                    // `apply::predecessor`) that the garbage collector has not removed yet.
                    o.controller == Some(true) && (o.uid == uid || (o.kind == "Bridge" && o.name == name))
                });
            let obj_name = obj.name_any();
            // One already terminating (a StatefulSet draining its pods) needs no second delete.
            let terminating = obj.metadata.deletion_timestamp.is_some();
            if !is_ours || terminating || wanted.contains(&(kind.resource().kind, obj_name.clone())) {
                continue;
            }
            tracing::info!(kind = %kind.resource().kind, name = %obj_name, "pruning child no longer desired");
            apply::delete(&cx.client, &kind.resource(), &obj.metadata)
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
/// A failed reconcile (`Reconciled=False`) is always a Warning. Two conditions turning False
/// for the same reason (a failure makes both `Reconciled` and `Ready` False) make one Event.
async fn announce_transitions(cx: &Context, bridge: &Bridge, old: &[Condition], new: &[Condition]) {
    let mut warned = BTreeSet::new();
    for c in new {
        let before = old.iter().find(|o| o.type_ == c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let actionable =
            c.type_ == Type::Reconciled.as_str() || Reason::parse(&c.reason).is_some_and(Reason::needs_action);
        if c.status == "False" && actionable {
            if !warned.insert(c.reason.clone()) {
                continue;
            }
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
