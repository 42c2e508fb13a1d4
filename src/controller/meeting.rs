//! The Meeting reconciler: read the Meeting and its Bridge → validate → decide the phase from
//! the clock → build the credentials Secret → apply or delete it → status. Requeues exactly
//! at the next transition (or token renewal), never on a timer of its own.
//!
//! Privacy: participant names, emails and tokens appear only in the credentials Secret. Logs,
//! Events and status carry the Meeting's name, its phase and counts, nothing else.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::watch::Credentials;
use super::{Context, Error, Kind, status};
use crate::api::bridge::{AuthMode, Bridge};
use crate::api::meeting::{Meeting, MeetingStatus, Phase};
use crate::bridge::secrets;
use crate::conditions::{Reason, Type, condition as cond};
use crate::labels;
use crate::meeting::{self, capacity, credentials, schedule, validate};
use crate::{apply, clock};

pub use crate::meeting::OWNER_KIND;

pub async fn reconcile(meeting: Arc<Meeting>, cx: Arc<Context>) -> Result<Action, Error> {
    let key = format!("{}/{}", meeting.namespace().unwrap_or_default(), meeting.name_any());
    let started = std::time::Instant::now();
    let result = reconcile_meeting(meeting, cx.clone())
        .instrument(tracing::info_span!("reconcile", meeting = %key))
        .await;
    cx.metrics.reconcile_done(
        "Meeting",
        started.elapsed(),
        result.as_ref().map(|_| ()).map_err(|e| e.reason().as_str()),
    );
    result
}

/// What the reconcile decided, before it is written as status.
struct Outcome {
    phase: Phase,
    ready: (bool, Reason, String),
    capacity: Option<(bool, Reason, String)>,
    url: Option<String>,
    credentials: bool,
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
            due: None,
        }
    }
}

async fn reconcile_meeting(meeting: Arc<Meeting>, cx: Arc<Context>) -> Result<Action, Error> {
    if !cx.caches_synced() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let ns = meeting.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = meeting.name_any();
    let secret_name = credentials::secret_name(&name);
    let live = cx.credentials(&ns, &name);
    let now = cx.clock.now();

    let outcome = decide(&cx, &meeting, &ns, &name, now, live.as_ref()).await?;
    if !outcome.credentials && live.is_some() {
        // Links must stop being handed out once the Meeting cannot or no longer runs.
        let secret = DynamicObject::new(&secret_name, &Kind::Secret.resource()).within(&ns);
        apply::delete(&cx.client, &Kind::Secret.resource(), &secret)
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
    let status = MeetingStatus {
        observed_generation: generation,
        phase: Some(outcome.phase),
        url: outcome.url.clone(),
        credentials_secret: outcome.credentials.then(|| secret_name.clone()),
        conditions,
    };
    let written = patch_status(&cx, &meeting, status).await?;
    tracing::info!(phase = ?outcome.phase, status_written = written, "reconciled");
    Ok(match outcome.due {
        Some(at) => Action::requeue(clock::until(cx.clock.now(), at)),
        None => Action::await_change(),
    })
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
    let capacity = capacity::condition(&bridge, spec, &bookings, now);
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
            due: None,
        });
    }
    let bridge_ready = bridge.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == Type::Ready.as_str() && c.status == "True")
    });
    // Before the first issuance a Meeting waits for a ready Bridge; once links exist, a Bridge
    // briefly not ready (a pod restarting) does not take them away.
    if !bridge_ready && live.is_none() {
        let mut o = Outcome::waiting(
            Phase::Pending,
            Reason::BridgeNotReady,
            format!("waiting for Bridge {} to be Ready", spec.bridge),
        );
        o.capacity = Some(capacity);
        o.due = next;
        return Ok(o);
    }

    let key = match bridge.spec.auth.mode {
        AuthMode::Open => None,
        AuthMode::Jwt => match app_secret(cx, ns, &spec.bridge) {
            Some(k) => Some(k),
            None => {
                let mut o = Outcome::waiting(
                    Phase::Pending,
                    Reason::AwaitingBridgeSecret,
                    format!("waiting for Bridge {}'s generated app secret", spec.bridge),
                );
                o.capacity = Some(capacity);
                return Ok(o);
            }
        },
    };
    let recorded = live.and_then(|l| l.window);
    let window = schedule::window(spec, now, recorded);
    let input = credentials::Input {
        domain: &bridge.spec.domain,
        room: &room,
        spec,
        key: key.as_deref(),
        window,
    };
    let owner = meeting
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let secret = credentials::secret(credentials::meta(name, ns, owner), &input)
        .map_err(|e| Error::Build(format!("signing join tokens: {e}")))?;
    // The cache keeps a digest of the live Secret, not its links: write when they differ.
    if live.map(|l| l.digest) != Some(credentials::digest(&secret)) {
        super::put_secret_at(
            &cx.client,
            secret,
            live.map(|l| l.resource_version.clone().unwrap_or_default()),
        )
        .await?;
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
        due,
    })
}

/// The Bridge's JWT app secret, from the cache of its generated Secret.
fn app_secret(cx: &Context, ns: &str, bridge: &str) -> Option<Vec<u8>> {
    let obj = cx.cached_secret(ns, &labels::child_name(bridge, secrets::SUFFIX))?;
    super::secret_value(&obj, secrets::JWT_APP_SECRET)
}

fn fmt(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Writes status when it changed (see [`status::patch`]) and announces a phase change as an
/// Event.
async fn patch_status(cx: &Context, meeting: &Meeting, new: MeetingStatus) -> Result<bool, Error> {
    let (phase, ready) = (new.phase, new.conditions.first().map(|c| c.message.clone()));
    let Some(old) = status::patch(cx, meeting, new).await? else {
        return Ok(false);
    };
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

pub fn error_policy(_meeting: Arc<Meeting>, err: &Error, _cx: Arc<Context>) -> Action {
    super::retry_after(err)
}
