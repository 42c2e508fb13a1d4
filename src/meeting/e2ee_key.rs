//! The E2EE passphrase of a Meeting on a LiveKit Bridge with `keyDistribution: Link`: generated
//! once by the operator into Secret `<meeting>-e2ee` (owned by the Meeting), so the links can
//! always be rebuilt with the same key (a credentials Secret deleted by hand comes back with
//! the same links), and replaced only when the Meeting's rekey annotation asks, which reissues
//! every link. With `OutOfBand` the Secret does not exist: nobody in the cluster holds the key.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::labels::{self, Component};

/// Name suffix of the Secret.
pub const SUFFIX: &str = "e2ee";
/// Key of the passphrase in it.
pub const KEY: &str = "passphrase";
/// Meeting annotation requesting a new passphrase: set it to a new value (a date, a counter)
/// and the operator replaces the passphrase once for that value and reissues every link.
pub const REKEY_ANNOTATION: &str = "conclave.dev/rekey";
/// Annotation on the Secret: the rekey value its passphrase belongs to.
pub const REKEYED_ANNOTATION: &str = "conclave.dev/rekeyed";

/// Name of the passphrase Secret of Meeting `meeting`.
pub fn secret_name(meeting: &str) -> String {
    labels::child_name(meeting, SUFFIX)
}

/// What the operator does with the passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Use the one in the Secret.
    Keep(String),
    /// Write a new one (none yet, or a rekey asked for); `rekey` is the value it answers.
    Generate { rekey: Option<String>, replaces: bool },
}

/// Decides from the live passphrase, the rekey value it belongs to, and the one the Meeting
/// asks for.
pub fn plan(live: Option<&str>, rekeyed: Option<&str>, requested: Option<&str>) -> Plan {
    match live {
        Some(k) if !k.is_empty() && (requested.is_none() || requested == rekeyed) => Plan::Keep(k.to_string()),
        Some(_) => Plan::Generate {
            rekey: requested.map(str::to_string),
            replaces: true,
        },
        None => Plan::Generate {
            rekey: requested.map(str::to_string),
            replaces: false,
        },
    }
}

/// Metadata of the passphrase Secret: its name, the Meeting's labels, its controller reference.
pub fn meta(meeting: &str, namespace: &str, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(secret_name(meeting)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels::labels(super::OWNER_KIND, meeting, Component::E2eeKey)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The Secret holding `passphrase`, and the rekey value it answers.
pub fn secret(mut meta: ObjectMeta, passphrase: &str, rekey: Option<&str>) -> Secret {
    meta.annotations = rekey.map(|r| BTreeMap::from([(REKEYED_ANNOTATION.to_string(), r.to_string())]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY.to_string(),
            ByteString(passphrase.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_passphrase_changes_only_when_asked() {
        assert_eq!(plan(Some("k"), None, None), Plan::Keep("k".into()));
        assert_eq!(plan(Some("k"), Some("1"), Some("1")), Plan::Keep("k".into()));
        assert_eq!(
            plan(Some("k"), Some("1"), None),
            Plan::Keep("k".into()),
            "removing the annotation is not a rekey"
        );
        assert_eq!(
            plan(Some("k"), Some("1"), Some("2")),
            Plan::Generate {
                rekey: Some("2".into()),
                replaces: true
            }
        );
        assert_eq!(
            plan(Some("k"), None, Some("1")),
            Plan::Generate {
                rekey: Some("1".into()),
                replaces: true
            }
        );
        assert_eq!(
            plan(None, None, Some("1")),
            Plan::Generate {
                rekey: Some("1".into()),
                replaces: false
            }
        );
        assert_eq!(
            plan(Some(""), None, None),
            Plan::Generate {
                rekey: None,
                replaces: true
            },
            "an emptied Secret gets a key"
        );
    }
}
