//! Kubernetes Events (events.k8s.io/v1) about Bridges and Meetings.
//!
//! Written directly rather than through kube-runtime's `Recorder`, which keeps every Event it
//! published in the last six minutes (to count repeats) and scans them all on each publish:
//! 10,000 Meetings created in a few minutes meant 10,000 cached Events and a quadratic scan.
//! Conclave publishes an Event only on a transition (a phase, a condition turning), never
//! in a loop, so there is nothing to aggregate.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::events::EventType;

/// `reportingController` of every Event.
pub const CONTROLLER: &str = "conclave";

/// Publishes Events. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    client: Client,
    /// `reportingInstance`: the Pod's name, or the controller's.
    instance: String,
}

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Events {
        Events {
            client,
            instance: instance.unwrap_or_else(|| CONTROLLER.into()),
        }
    }

    /// Publishes one Event about `regarding`. Best effort: a failure is logged, never returned.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                // Named like kube's own recorder names them (`generateName` would refuse the
                // trailing dot): the object's name and a unique suffix.
                name: Some(format!(
                    "{}.{:x}{:08x}",
                    regarding.name.as_deref().unwrap_or(CONTROLLER),
                    k8s_openapi::jiff::Timestamp::now().as_nanosecond(),
                    rand::random::<u32>()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }

    pub async fn warn(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(regarding, EventType::Warning, reason, action, note).await;
    }
}
