//! Status conditions as both reconcilers write them: their types and reasons are typed
//! constants here, so a reason is written the same everywhere and a dashboard or alert can rely
//! on the set.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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

/// A condition of the standard shape, stamped now; see [`keep_transition_times`].
pub fn condition(type_: Type, ok: bool, reason: Reason, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.as_str().into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.as_str().into(),
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
}
