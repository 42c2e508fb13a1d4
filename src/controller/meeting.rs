//! The Meeting reconciler: read the Meeting and its Bridge → validate → decide the phase from
//! the clock → build the credentials Secret → apply or delete it → status. Comes back exactly
//! at the next transition (or token renewal), on the Meetings' one timer, never polling.
//!
//! Privacy: participant names, emails and tokens appear only in the credentials Secret. Logs,
//! Events and status carry the Meeting's name, its phase and counts, nothing else.

use std::sync::Arc;
use std::time::Duration;

use crate::conditions::Condition;
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::watch::Credentials;
use super::{Context, Error, Kind, status};
use crate::api::bridge::{AuthMode, Bridge, Engine};
use crate::api::meeting::{KeyDistribution, LinkValidity, Meeting, MeetingStatus, Phase};
use crate::bridge::secrets;
use crate::conditions::{Reason, Type, condition as cond};
use crate::engine::livekit::links as livekit;
use crate::labels;
use crate::meeting::credentials::Signer;
use crate::meeting::{self, capacity, credentials, e2ee_key, schedule, validate};
use crate::{apply, clock};

pub use crate::meeting::OWNER_KIND;

/// Reconciles the queued Meeting `key` (`namespace/name`) if it is still cached; a failure is
/// retried on the Meeting's timer.
pub async fn reconcile_queued(key: Arc<str>, cx: Arc<Context>) {
    let Some((ns, name)) = super::watch::split_key(&key) else {
        return;
    };
    let Some(meeting) = cx.meetings.get(&ObjectRef::new(name).within(ns)) else {
        return;
    };
    if let Err(err) = reconcile(meeting, cx.clone()).await {
        let retry = tokio::time::Instant::now() + super::retry_delay(&err);
        cx.timers.set(ns, name, Some(retry));
    }
}

pub async fn reconcile(meeting: Arc<Meeting>, cx: Arc<Context>) -> Result<(), Error> {
    let key = format!("{}/{}", meeting.namespace().unwrap_or_default(), meeting.name_any());
    let started = std::time::Instant::now();
    let span = tracing::info_span!("reconcile", meeting = %key);
    let result = reconcile_meeting(meeting.clone(), cx.clone())
        .instrument(span.clone())
        .await;
    cx.metrics.reconcile_done(
        "Meeting",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(|e| e.reason().as_str()),
    );
    if let Err(err) = &result {
        report_failure(&cx, &meeting, err).instrument(span).await;
    }
    result
}

/// A failed reconcile shows in status: `Reconciled=False` with the error's kind as the reason
/// and, unless the API server was only briefly unreachable, `Ready=False`; the phase and the
/// links already issued stay. The next successful reconcile clears it. A stale cache is
/// retried within a second and not reported.
async fn report_failure(cx: &Context, meeting: &Meeting, err: &Error) {
    if matches!(err, Error::Stale(_)) {
        return;
    }
    let generation = meeting.metadata.generation;
    let mut status = meeting.status.clone().unwrap_or_default();
    status::record_failure(&mut status, err, generation);
    if let Err(e) = patch_status(cx, meeting, status).await {
        tracing::warn!(error = %e, "the failure could not be written into status");
    }
}

/// What the reconcile decided, before it is written as status.
struct Outcome {
    phase: Phase,
    ready: (bool, Reason, String),
    capacity: Option<(bool, Reason, String)>,
    url: Option<String>,
    /// Whether the credentials Secret stays; `false` withdraws the links.
    credentials: bool,
    /// The validity of the links the Secret holds.
    window: Option<schedule::Window>,
    due: Option<DateTime<Utc>>,
}

impl Outcome {
    fn waiting(phase: Phase, reason: Reason, message: String) -> Outcome {
        Outcome {
            phase,
            ready: (false, reason, message),
            capacity: None,
            url: None,
            credentials: false,
            window: None,
            due: None,
        }
    }
}

async fn reconcile_meeting(meeting: Arc<Meeting>, cx: Arc<Context>) -> Result<(), Error> {
    let ns = meeting.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = meeting.name_any();
    if !cx.caches_synced() {
        let soon = tokio::time::Instant::now() + Duration::from_millis(200);
        cx.timers.set(&ns, &name, Some(soon));
        return Ok(());
    }
    let secret_name = credentials::secret_name(&name);
    let live = cx.credentials(&ns, &name);
    let now = cx.clock.now();

    let outcome = decide(&cx, &meeting, &ns, &name, now, live.as_ref()).await?;
    // Links must stop being handed out once the Meeting cannot or no longer runs; only a
    // Secret this Meeting controls is ever deleted.
    let ours = |c: &Credentials| apply::controller_uid(&c.meta) == meeting.metadata.uid.as_deref();
    if let Some(c) = live.as_ref().filter(|c| !outcome.credentials && ours(c)) {
        apply::delete(&cx.client, &Kind::Secret.resource(), &c.meta)
            .await
            .map_err(|e| Error::Apply(format!("Secret/{secret_name}"), e))?;
    }

    let generation = meeting.metadata.generation;
    let mut conditions = vec![cond(
        Type::Ready,
        outcome.ready.0,
        outcome.ready.1,
        &outcome.ready.2,
        generation,
    )];
    if let Some((ok, reason, msg)) = &outcome.capacity {
        conditions.push(cond(Type::CapacityReserved, *ok, *reason, msg, generation));
    }
    if let Some((ok, reason, msg)) = e2ee_limit(&cx, &meeting, &ns, outcome.phase) {
        conditions.push(cond(Type::E2eeAvailable, ok, reason, &msg, generation));
    }
    conditions.push(cond(Type::Reconciled, true, Reason::Succeeded, "", generation));
    let links = outcome.window.filter(|_| outcome.credentials).map(|w| LinkValidity {
        valid_from: whole_seconds(w.not_before),
        valid_until: whole_seconds(w.expires),
    });
    let status = MeetingStatus {
        observed_generation: generation,
        phase: Some(outcome.phase),
        url: outcome.url.clone(),
        credentials_secret: outcome.credentials.then(|| secret_name.clone()),
        links,
        conditions,
    };
    let written = patch_status(&cx, &meeting, status).await?;
    tracing::info!(phase = ?outcome.phase, ready = %outcome.ready.1.as_str(), status_written = written, "reconciled");
    // The next transition waits on the Meetings' one timer, not in the controller's scheduler
    // (see `Timers`); a wait left from an earlier round is replaced or cleared.
    let due = outcome
        .due
        .map(|at| tokio::time::Instant::now() + clock::until(cx.clock.now(), at));
    cx.timers.set(&ns, &name, due);
    Ok(())
}

async fn decide(
    cx: &Context,
    meeting: &Meeting,
    ns: &str,
    name: &str,
    now: DateTime<Utc>,
    live: Option<&Credentials>,
) -> Result<Outcome, Error> {
    let spec = &meeting.spec;
    // What a Secret of this name says about links already out counts only when this Meeting
    // controls it (not a deleted namesake's, not someone else's).
    let own = live.filter(|l| apply::controller_uid(&l.meta) == meeting.metadata.uid.as_deref());
    let Some(bridge) = cx.bridges.get(&ObjectRef::<Bridge>::new(&spec.bridge).within(ns)) else {
        return Ok(Outcome::waiting(
            Phase::Pending,
            Reason::BridgeNotFound,
            format!("spec.bridge: Bridge {} does not exist in namespace {ns}", spec.bridge),
        ));
    };
    if let Err(invalid) = validate::against_bridge(spec, &spec.bridge, &bridge.spec) {
        return Ok(Outcome::waiting(Phase::Invalid, invalid.reason, invalid.message));
    }
    let room = meeting::room(name, spec);
    let siblings = cx.meetings_of(ns, &spec.bridge);
    let bookings: Vec<validate::Booking<'_>> = siblings.iter().map(|m| validate::Booking::of(m)).collect();
    let me = validate::Booking::of(meeting);
    if let Some(other) = validate::room_taken_by(&me, &bookings) {
        return Ok(Outcome::waiting(
            Phase::Invalid,
            Reason::RoomInUse,
            format!(
                "spec.room: Meeting {other} holds room {room} on Bridge {} at an overlapping time",
                spec.bridge
            ),
        ));
    }

    let (phase, next) = schedule::phase_at(spec, now);
    let url = meeting::room_url(&bridge.spec.domain, &room);
    let capacity = capacity::condition(&bridge, &me, &bookings, now);
    if phase == Phase::Ended {
        return Ok(Outcome {
            phase,
            ready: (
                false,
                Reason::Ended,
                format!("ended at {}; links were removed", fmt(spec.end)),
            ),
            capacity: None,
            url: Some(url),
            credentials: false,
            window: None,
            due: None,
        });
    }
    let bridge_ready = bridge.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == Type::Ready.as_str() && c.status == "True")
    });
    // Before the first issuance a Meeting waits for a ready Bridge. Once links were issued, a
    // Bridge briefly not ready (a pod restarting) does not take them away, and a credentials
    // Secret deleted by hand comes back with the same links (the window is in status).
    let issued = meeting
        .status
        .as_ref()
        .and_then(|s| s.links.as_ref())
        .map(|l| schedule::Window {
            not_before: l.valid_from,
            expires: l.valid_until,
        });
    if !bridge_ready && own.is_none() && issued.is_none() {
        let mut o = Outcome::waiting(
            Phase::Pending,
            Reason::BridgeNotReady,
            format!("waiting for Bridge {} to be Ready", spec.bridge),
        );
        o.capacity = Some(capacity);
        o.due = next;
        return Ok(o);
    }

    let owner = meeting
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let Some(keys) = bridge_keys(cx, ns, &bridge) else {
        let mut o = Outcome::waiting(
            Phase::Pending,
            Reason::AwaitingBridgeSecret,
            format!("waiting for Bridge {}'s generated secrets", spec.bridge),
        );
        o.capacity = Some(capacity);
        // Links already out stay until they can be signed again.
        if let Some(l) = own {
            o.phase = phase;
            o.credentials = true;
            o.window = l.window;
        }
        return Ok(o);
    };
    let passphrase = passphrase(cx, meeting, ns, name, &bridge, &owner).await?;
    let recorded = own.and_then(|l| l.window).or(issued);
    let created = meeting
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .unwrap_or(now);
    let window = schedule::window(spec, now, recorded, created);
    let signer = match &keys {
        BridgeKeys::Open => Signer::Open,
        BridgeKeys::Jitsi(secret) => Signer::Jitsi(secret),
        BridgeKeys::LiveKit { api_key, api_secret } => Signer::LiveKit(livekit::Keys {
            api_key,
            api_secret,
            e2ee: spec.e2ee.unwrap_or(bridge.spec.e2ee),
            key_distribution: spec.key_distribution,
            passphrase: passphrase.as_deref(),
        }),
    };
    let input = credentials::Input {
        domain: &bridge.spec.domain,
        room: &room,
        spec,
        signer,
        window,
    };
    let secret = credentials::secret(credentials::meta(name, ns, owner), &input)
        .map_err(|e| Error::Build(format!("signing join tokens: {e}")))?;
    // The cache keeps a digest of the live Secret, not its links: write when they differ.
    if live.map(|l| l.digest) != Some(credentials::digest(&secret)) {
        super::put_secret(&cx.client, secret, live.map(|l| &l.meta)).await?;
    }

    // Standing rooms wake to renew their tokens; scheduled ones at their next phase.
    let renew = spec.end.is_none().then(|| window.renew_at());
    let due = [next, renew].into_iter().flatten().min();
    let links = spec.participants.len() + usize::from(spec.guests.allowed);
    let (ready_reason, ready_msg) = if bridge_ready {
        (
            Reason::LinksIssued,
            format!(
                "{links} join links valid {} to {}",
                fmt(Some(window.not_before)),
                fmt(Some(window.expires))
            ),
        )
    } else {
        (
            Reason::BridgeNotReady,
            format!("{links} join links issued; Bridge {} is not Ready", spec.bridge),
        )
    };
    Ok(Outcome {
        // Once links exist the schedule decides the phase; a Bridge that is briefly not Ready
        // (a pod restarting, the pool growing) shows in the Ready condition only.
        phase,
        ready: (bridge_ready, ready_reason, ready_msg),
        capacity: Some(capacity),
        url: Some(url),
        credentials: true,
        window: Some(window),
        due,
    })
}

/// `E2EEAvailable` for a Meeting that runs (or will) on an existing Bridge.
fn e2ee_limit(cx: &Context, meeting: &Meeting, ns: &str, phase: Phase) -> Option<(bool, Reason, String)> {
    if matches!(phase, Phase::Invalid | Phase::Ended) {
        return None;
    }
    let bridge = cx
        .bridges
        .get(&ObjectRef::<Bridge>::new(&meeting.spec.bridge).within(ns))?;
    meeting::e2ee::condition(&meeting.spec, &bridge.spec)
}

/// What a Bridge's links are signed with, read from the cache of its generated Secret.
enum BridgeKeys {
    Open,
    Jitsi(Vec<u8>),
    LiveKit { api_key: String, api_secret: Vec<u8> },
}

/// The Bridge's signing keys; `None` until its generated Secret holds them.
fn bridge_keys(cx: &Context, ns: &str, bridge: &Bridge) -> Option<BridgeKeys> {
    if bridge.spec.engine == Engine::Jitsi && bridge.spec.auth.mode == AuthMode::Open {
        return Some(BridgeKeys::Open);
    }
    // Only a Secret this very Bridge controls: a deleted namesake's keys must never sign links.
    let obj = cx.owned_secret(
        ns,
        &labels::child_name(&bridge.name_any(), secrets::SUFFIX),
        bridge.uid().as_deref()?,
    )?;
    let value = |k| super::secret_value(&obj, k).filter(|v| !v.is_empty());
    Some(match bridge.spec.engine {
        Engine::Jitsi => BridgeKeys::Jitsi(value(secrets::JWT_APP_SECRET)?),
        Engine::LiveKit => BridgeKeys::LiveKit {
            api_key: String::from_utf8(value(secrets::LIVEKIT_API_KEY)?).ok()?,
            api_secret: value(secrets::LIVEKIT_API_SECRET)?,
        },
    })
}

/// The Meeting's E2EE passphrase on a LiveKit Bridge with `keyDistribution: Link`, created once
/// and replaced only on a rekey (see [`e2ee_key`]); `None` otherwise, and with `OutOfBand` a
/// passphrase left from before is deleted, so nobody in the cluster holds one.
async fn passphrase(
    cx: &Context,
    meeting: &Meeting,
    ns: &str,
    name: &str,
    bridge: &Bridge,
    owner: &OwnerReference,
) -> Result<Option<String>, Error> {
    let secret_name = e2ee_key::secret_name(name);
    // Only this very Meeting's passphrase: a deleted namesake's must never be handed out again.
    let live = cx.owned_secret(ns, &secret_name, &owner.uid);
    if bridge.spec.engine != Engine::LiveKit || meeting.spec.key_distribution == KeyDistribution::OutOfBand {
        if let Some(obj) = live.as_ref() {
            apply::delete(&cx.client, &Kind::Secret.resource(), &obj.metadata)
                .await
                .map_err(|e| Error::Apply(format!("Secret/{secret_name}"), e))?;
        }
        return Ok(None);
    }
    let current = live.as_ref().map(|l| {
        super::secret_value(l, e2ee_key::KEY)
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default()
    });
    let rekeyed = live
        .as_ref()
        .and_then(|l| l.annotations().get(e2ee_key::REKEYED_ANNOTATION).cloned());
    let requested = meeting.annotations().get(e2ee_key::REKEY_ANNOTATION).cloned();
    match e2ee_key::plan(current.as_deref(), rekeyed.as_deref(), requested.as_deref()) {
        e2ee_key::Plan::Keep(k) => Ok(Some(k)),
        e2ee_key::Plan::Generate { rekey, replaces } => {
            let k = crate::engine::livekit::token::new_passphrase();
            let secret = e2ee_key::secret(e2ee_key::meta(name, ns, owner.clone()), &k, rekey.as_deref());
            super::put_secret(&cx.client, secret, live.as_ref().map(|l| &l.metadata)).await?;
            if replaces {
                cx.event(
                    &meeting.object_ref(&()),
                    EventType::Normal,
                    "Rekeyed",
                    "Rekey",
                    format!("new E2EE passphrase in Secret {secret_name}; every link is reissued"),
                )
                .await;
            }
            Ok(Some(k))
        }
    }
}

/// An instant without its fraction of a second, as tokens and annotations carry it.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn fmt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Writes status when it changed (see [`status::patch`]) and announces a phase change as an
/// Event.
async fn patch_status(cx: &Context, meeting: &Meeting, new: MeetingStatus) -> Result<bool, Error> {
    let (phase, ready) = (new.phase, new.conditions.first().map(|c| c.message.clone()));
    let e2ee = find_condition(&new.conditions, Type::E2eeAvailable).cloned();
    let failed = new
        .conditions
        .iter()
        .find(|c| c.type_ == Type::Reconciled.as_str() && c.status == "False")
        .cloned();
    let Some(old) = status::patch(cx, meeting, new).await? else {
        return Ok(false);
    };
    // A failed reconcile is a Warning, once, when it starts failing or fails for a new reason.
    if let Some(f) = failed
        && !old
            .conditions
            .iter()
            .any(|c| c.type_ == f.type_ && c.status == f.status && c.reason == f.reason)
    {
        cx.event(
            &meeting.object_ref(&()),
            EventType::Warning,
            &f.reason,
            "Reconcile",
            f.message,
        )
        .await;
    }
    // A Required room that may outgrow its engine's E2EE limit is announced once, on the turn.
    if let Some(c) = e2ee.filter(|c| c.status == "False")
        && find_condition(&old.conditions, Type::E2eeAvailable).is_none_or(|o| o.status != "False")
    {
        cx.event(
            &meeting.object_ref(&()),
            EventType::Warning,
            &c.reason,
            "Validate",
            c.message,
        )
        .await;
    }
    if old.phase != phase
        && let Some(phase) = phase
    {
        let type_ = if phase == Phase::Invalid {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = match ready {
            Some(message) => format!("{phase:?}: {message}"),
            None => format!("{phase:?}"),
        };
        cx.event(
            &meeting.object_ref(&()),
            type_,
            &format!("{phase:?}"),
            "Reconcile",
            note,
        )
        .await;
    }
    Ok(true)
}

fn find_condition(conditions: &[Condition], type_: Type) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}
