//! Status conditions as both reconcilers write them: their types and reasons are typed
//! constants here, so a reason is written the same everywhere and a dashboard or alert can rely
//! on the set.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Declares a `Copy` enum whose variants map to the exact strings the API shows.
macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            /// Every value, for tests and documentation.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string written to the API.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// Condition types of Bridges and Meetings.
    Type {
        /// Everything the object's spec asks for is in place and working.
        Ready = "Ready",
        /// Bridge: the serving certificate is usable.
        CertificateReady = "CertificateReady",
        /// Bridge: the engine's signalling workloads are ready.
        SignallingReady = "SignallingReady",
        /// Bridge: every SFU replica is ready and has an address.
        SfuReady = "SFUReady",
        /// Bridge: TURN is ready (or disabled).
        TurnReady = "TURNReady",
        /// Bridge: the API server refused a child.
        ChildrenApplied = "ChildrenApplied",
        /// The last reconcile ran to the end; `False` with the error's kind as the reason.
        Reconciled = "Reconciled",
        /// Meeting: its Bridge can hold it.
        CapacityReserved = "CapacityReserved",
        /// Meeting with E2EE `Required`: the room stays below the size from which its engine's
        /// clients stop offering E2EE.
        E2eeAvailable = "E2EEAvailable",
    }
}

named! {
    /// Condition reasons.
    Reason {
        Ready = "Ready",
        NotReady = "NotReady",
        Running = "Running",
        Starting = "Starting",
        /// SFU: the minimum pool serves and more replicas are starting for a reservation.
        Scaling = "Scaling",
        Disabled = "Disabled",
        InvalidSpec = "InvalidSpec",
        AwaitingAddress = "AwaitingAddress",
        AddressNotIp = "AddressNotIP",
        PortInUse = "PortInUse",
        ChildRefused = "ChildRefused",
        CertManagerMissing = "CertManagerMissing",
        Issuing = "Issuing",
        SecretNotFound = "SecretNotFound",
        SecretMalformed = "SecretMalformed",
        Valid = "Valid",
        IssuedByConclaveCa = "IssuedByConclaveCA",
        BridgeNotFound = "BridgeNotFound",
        BridgeNotReady = "BridgeNotReady",
        AwaitingBridgeSecret = "AwaitingBridgeSecret",
        LinksIssued = "LinksIssued",
        Ended = "Ended",
        E2eeWeakerThanBridge = "E2EEWeakerThanBridge",
        RoomInUse = "RoomInUse",
        UnsupportedByEngine = "UnsupportedByEngine",
        ExceedsBridgeCapacity = "ExceedsBridgeCapacity",
        Overbooked = "Overbooked",
        Planned = "Planned",
        Reserved = "Reserved",
        WithinE2eeLimit = "WithinE2EELimit",
        AboveE2eeLimit = "AboveE2EELimit",
        MissingField = "MissingField",
        BuildFailed = "BuildFailed",
        ApplyFailed = "ApplyFailed",
        ReadFailed = "ReadFailed",
        StaleCache = "StaleCache",
        CaFailed = "CAFailed",
        /// The last reconcile ran to the end.
        Succeeded = "Succeeded",
        /// RBAC (or an admission plugin) forbids the operator a request.
        Forbidden = "Forbidden",
        /// A ResourceQuota refused a child.
        QuotaExceeded = "QuotaExceeded",
        /// An object Conclave does not control holds a child's name.
        ChildConflict = "ChildConflict",
    }
}

impl Reason {
    /// The reason a condition shows, when it is one of these.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    /// Reasons a human has to act on: a condition turning False for one of them becomes a
    /// Warning Event, once, on the transition.
    pub fn needs_action(self) -> bool {
        matches!(
            self,
            Reason::PortInUse
                | Reason::ChildRefused
                | Reason::InvalidSpec
                | Reason::SecretNotFound
                | Reason::SecretMalformed
                | Reason::CertManagerMissing
                | Reason::AwaitingAddress
                | Reason::AddressNotIp
                | Reason::Forbidden
                | Reason::QuotaExceeded
                | Reason::ChildConflict
        )
    }
}

/// A status condition: the fields and JSON of Kubernetes' `meta/v1` `Condition` (and its schema
/// in the CRDs), with its type, status and reason held without an allocation of their own when
/// they are strings Conclave writes. The Meetings' cache holds three or four conditions per
/// Meeting, and these three strings were about a third of a cached Meeting's allocations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub last_transition_time: Time,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, deserialize_with = "known")]
    pub reason: Cow<'static, str>,
    #[serde(deserialize_with = "known")]
    pub status: Cow<'static, str>,
    #[serde(rename = "type", deserialize_with = "known")]
    pub type_: Cow<'static, str>,
}

impl schemars::JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        <Standard as schemars::JsonSchema>::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        <Standard as schemars::JsonSchema>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Standard as schemars::JsonSchema>::json_schema(generator)
    }

    fn inline_schema() -> bool {
        <Standard as schemars::JsonSchema>::inline_schema()
    }
}

type Standard = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The condition statuses, types and reasons Conclave writes.
fn interned(text: &str) -> Option<&'static str> {
    ["True", "False", "Unknown"]
        .into_iter()
        .chain(Type::ALL.iter().map(|t| t.as_str()))
        .chain(Reason::ALL.iter().map(|r| r.as_str()))
        .find(|k| *k == text)
}

fn known<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'static, str>, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Cow<'static, str>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(interned(v).map_or_else(|| Cow::Owned(v.to_owned()), Cow::Borrowed))
        }
    }
    deserializer.deserialize_str(Text)
}

/// A condition of the standard shape, stamped now; see [`keep_transition_times`].
pub fn condition(type_: Type, ok: bool, reason: Reason, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: Cow::Borrowed(type_.as_str()),
        status: Cow::Borrowed(if ok { "True" } else { "False" }),
        reason: Cow::Borrowed(reason.as_str()),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// Puts `c` in place of the condition of its type, or appends it.
pub fn set(conditions: &mut Vec<Condition>, c: Condition) {
    match conditions.iter_mut().find(|o| o.type_ == c.type_) {
        Some(old) => *old = c,
        None => conditions.push(c),
    }
}

/// A condition whose status did not change keeps the transition time it had: that is what the
/// field means, and it is what lets an unchanged object compare equal and cost no write.
pub fn keep_transition_times(new: &mut [Condition], old: &[Condition]) {
    for c in new {
        if let Some(prev) = old.iter().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_its_time_and_a_flip_takes_a_new_one() {
        let mut old = condition(Type::Ready, true, Reason::Ready, "a", Some(1));
        old.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut same = vec![condition(Type::Ready, true, Reason::Ready, "b", Some(2))];
        keep_transition_times(&mut same, std::slice::from_ref(&old));
        assert_eq!(same[0].last_transition_time, old.last_transition_time);
        let mut flipped = vec![condition(Type::Ready, false, Reason::NotReady, "c", Some(2))];
        keep_transition_times(&mut flipped, std::slice::from_ref(&old));
        assert_ne!(flipped[0].last_transition_time, old.last_transition_time);
    }

    #[test]
    fn conditions_read_as_the_standard_shape_and_hold_known_strings_without_allocating() {
        let json = serde_json::json!({
            "type": "Ready", "status": "True", "reason": "LinksIssued", "message": "5 links",
            "lastTransitionTime": "2030-01-01T00:00:00Z", "observedGeneration": 3
        });
        let c: Condition = serde_json::from_value(json.clone()).expect("a condition");
        assert!(matches!(
            (&c.type_, &c.status, &c.reason),
            (
                Cow::Borrowed("Ready"),
                Cow::Borrowed("True"),
                Cow::Borrowed("LinksIssued")
            )
        ));
        assert_eq!(serde_json::to_value(&c).expect("json"), json, "written back as it came");
        let standard: Standard = serde_json::from_value(json).expect("the standard shape");
        assert_eq!(
            serde_json::to_value(&standard).expect("json"),
            serde_json::to_value(&c).expect("json")
        );
        let other: Condition = serde_json::from_value(serde_json::json!({
            "type": "Healthy", "status": "True", "reason": "SomeoneElse", "message": "",
            "lastTransitionTime": "2030-01-01T00:00:00Z"
        }))
        .expect("a condition of another writer");
        assert!(matches!(other.type_, Cow::Owned(ref t) if t == "Healthy"));
    }
}
