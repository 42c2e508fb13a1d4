//! Which reconciles a change asks for, decided from the object before and after it.
//!
//! The rule: a reconcile runs when something it reads changed. A status the operator wrote
//! itself changes nothing the same object's reconcile reads, so it triggers nothing; in
//! particular a Bridge's status (its reserved participants move with every Meeting) no longer
//! re-reconciles every Meeting on it, which made creating N Meetings on one Bridge cost on the
//! order of N² reconciles.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::Compact;
use super::cache::Hook;
use super::feed::Trigger;
use super::index::{Hosted, PhaseCounts, Span};
use super::slim;
use super::timers::Timers;
use crate::api::{Bridge, Meeting};
use crate::bridge::secrets as generated;
use crate::conditions::Type;
use crate::controller::Kind;
use crate::controller::status::Written;
use crate::labels;
use crate::meeting::capacity;
use crate::metrics::Metrics;

/// Whether anything a reconcile of the object reads besides its status changed: its spec
/// (generation), labels, annotations, identity or deletion.
fn changed<K: Resource>(old: &K, new: &K) -> bool {
    let (o, n) = (old.meta(), new.meta());
    o.generation != n.generation
        || o.labels != n.labels
        || o.annotations != n.annotations
        || o.uid != n.uid
        || o.deletion_timestamp != n.deletion_timestamp
}

fn bridge_ready(b: &Bridge) -> bool {
    b.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == Type::Ready.as_str() && c.status == "True")
    })
}

fn meetings_on(hosted: &Hosted, ns: &str, bridge: &str, out: &mut Vec<Trigger>) {
    out.extend(
        hosted
            .names(ns, bridge)
            .into_iter()
            .map(|m| Trigger::Meeting(ObjectRef::new(&m).within(ns))),
    );
}

/// Bridges: the Bridge itself when its spec or metadata changed; its Meetings when that or its
/// readiness changed (what a Meeting reads of its Bridge), or when it went away.
pub(super) fn bridge(metrics: Arc<Metrics>, hosted: Arc<Hosted>, written: Arc<Written>) -> Hook<Bridge> {
    Box::new(move |old, new, out| {
        let Some(any) = new.or(old) else { return };
        written.observed(any.uid().as_deref(), any.resource_version().as_deref());
        let (ns, name) = (any.namespace().unwrap_or_default(), any.name_any());
        match (old, new) {
            (old, Some(new)) => {
                let input = old.is_none_or(|o| changed(o, new));
                if input {
                    out.push(Trigger::Bridge(ObjectRef::from_obj(new)));
                }
                if input || old.is_some_and(|o| bridge_ready(o) != bridge_ready(new)) {
                    meetings_on(&hosted, &ns, &name, out);
                }
            }
            (Some(_), None) => {
                // A deleted Bridge is never reconciled again: its capacity series go with it.
                metrics.forget_bridge(&ns, &name);
                meetings_on(&hosted, &ns, &name, out);
            }
            (None, None) => {}
        }
    })
}

/// Meetings: the Meeting itself when its spec or metadata changed; when its spec changed (or
/// it came or went), its Bridge (pool size, room limits) and the siblings whose schedule
/// overlaps it, before or after (room conflicts, overbooking); the Bridge through the booking
/// throttle (at most one reconcile per window for a burst). Also keeps the index of
/// Meetings by Bridge and the phase counts.
pub(super) fn meeting(
    phases: Arc<Mutex<PhaseCounts>>,
    metrics: Arc<Metrics>,
    hosted: Arc<Hosted>,
    bridges: Store<Bridge>,
    written: Arc<Written>,
    timers: Arc<Timers>,
) -> Hook<Meeting> {
    Box::new(move |old, new, out| {
        let Some(any) = new.or(old) else { return };
        written.observed(any.uid().as_deref(), any.resource_version().as_deref());
        hosted.update(old, new);
        if new.is_none() {
            timers.set(&any.namespace().unwrap_or_default(), &any.name_any(), None);
        }
        {
            let mut phases = phases.lock().unwrap_or_else(|p| p.into_inner());
            let before = phases.counts.clone();
            phases.change(old, new);
            if phases.counts != before {
                metrics.set_meetings_by_phase(&phases.counts);
            }
        }
        if let Some(new) = new
            && old.is_none_or(|o| changed(o, new))
        {
            out.push(Trigger::Meeting(ObjectRef::from_obj(new)));
        }
        let booking = match (old, new) {
            (Some(o), Some(n)) => o.metadata.generation != n.metadata.generation || o.uid() != n.uid(),
            _ => true,
        };
        if !booking {
            return;
        }
        let ns = any.namespace().unwrap_or_default();
        let bridge = ObjectRef::<Bridge>::new(&any.spec.bridge).within(&ns);
        let lead = bridges
            .get(&bridge)
            .map(|b| capacity::lead_time(&b.spec.sfu))
            .unwrap_or_default();
        out.push(Trigger::Booking(bridge));
        for m in [old, new].into_iter().flatten() {
            out.extend(
                hosted
                    .overlapping(&ns, &m.spec.bridge, &Span::of(m), lead)
                    .into_iter()
                    .filter(|sibling| *sibling != m.name_any())
                    .map(|sibling| Trigger::Meeting(ObjectRef::new(&sibling).within(&ns))),
            );
        }
    })
}

/// The controller of a child, if it is a Bridge or a Meeting; without an owner reference, the
/// parent its labels name (the TLS Secret cert-manager writes for a Bridge carries the Bridge's
/// labels, from the Certificate's secretTemplate, and no owner).
fn owner(obj: &Compact) -> Option<Trigger> {
    let ns = obj.namespace()?;
    let (bridge, meeting, name) = match obj.owner_references().iter().find(|o| o.controller == Some(true)) {
        Some(o) => (o.kind == "Bridge", o.kind == "Meeting", o.name.clone()),
        None => {
            let kind = obj.labels().get(labels::OWNER_KIND)?;
            (
                kind == crate::controller::bridge::OWNER_KIND,
                kind == crate::meeting::OWNER_KIND,
                obj.labels().get(labels::INSTANCE)?.clone(),
            )
        }
    };
    if bridge {
        Some(Trigger::Bridge(ObjectRef::new(&name).within(&ns)))
    } else if meeting {
        Some(Trigger::Meeting(ObjectRef::new(&name).within(&ns)))
    } else {
        None
    }
}

/// Children: their Bridge, on any change (their status is the Bridge's readiness); a Meeting's
/// Secret (its E2EE passphrase), its Meeting. The generated Secret changing (a rotation) also
/// re-signs the links of the Bridge's Meetings.
pub(super) fn child(kind: Kind, hosted: Arc<Hosted>) -> Hook<Compact> {
    Box::new(move |old, new, out| {
        let Some(any) = new.or(old) else { return };
        let bridge = match owner(any) {
            Some(Trigger::Bridge(bridge)) => bridge,
            Some(other) => return out.push(other),
            None => return,
        };
        out.push(Trigger::Bridge(bridge.clone()));
        let generated_secret = kind == Kind::Secret
            && any.labels().get(labels::COMPONENT).map(String::as_str) == Some(labels::Component::Secrets.as_str())
            && any.name_any() == labels::child_name(&bridge.name, generated::SUFFIX);
        let data = |o: &Compact| o.data().get("data").cloned();
        if generated_secret && old.map(data) != new.map(data) {
            meetings_on(
                &hosted,
                bridge.namespace.as_deref().unwrap_or_default(),
                &bridge.name,
                out,
            );
        }
    })
}

/// Nodes: every Bridge, when something placement reads changed.
pub(super) fn node() -> Hook<Node> {
    Box::new(|old, new, out| match (old, new) {
        (Some(o), Some(n)) if !slim::node_changed(o, n) => {}
        _ => out.push(Trigger::AllBridges),
    })
}

/// SFU pods: their Bridge, while one waits for a node the scheduler says cannot take it (the
/// Bridge re-places the replica after a grace period).
pub(super) fn sfu_pod() -> Hook<Compact> {
    Box::new(|_, new, out| {
        let Some(pod) = new else { return };
        let waiting = crate::bridge::placement::unschedulable_since(&pod.value()).is_some();
        if let (true, Some(bridge), Some(ns)) = (waiting, pod.labels().get(labels::INSTANCE), pod.namespace()) {
            out.push(Trigger::Bridge(ObjectRef::new(bridge).within(&ns)));
        }
    })
}
