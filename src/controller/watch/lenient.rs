//! Objects as lists and watches deliver them, tolerating the one that does not deserialize.
//!
//! A Bridge or Meeting written under an older schema, or by hand with validation off, would
//! fail a typed list as a whole (and with it every cache sync) or be dropped from a watch
//! without a word. [`Lenient`] reads each item on its own, so a bad item becomes
//! [`Lenient::Invalid`] with its metadata and the reason, and the rest of the list is
//! unaffected.

use std::borrow::Cow;
use std::sync::Arc;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An object of kind `K`, or the metadata of one that is not a valid `K` and why.
#[derive(Clone, Debug)]
pub enum Lenient<K> {
    Valid(K),
    /// Boxed: a valid object is the common case and should not pay for the metadata's size.
    Invalid {
        metadata: Box<ObjectMeta>,
        error: Arc<str>,
    },
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // One item at a time: the tree lives only while its own item is read.
        let tree = Value::deserialize(deserializer)?;
        match K::deserialize(&tree) {
            Ok(valid) => Ok(Lenient::Valid(valid)),
            Err(_) => {
                let metadata = match tree.get("metadata") {
                    Some(m) => Box::new(ObjectMeta::deserialize(m).map_err(D::Error::custom)?),
                    None => Box::default(),
                };
                Ok(Lenient::Invalid {
                    metadata,
                    error: why::<K>(&tree).into(),
                })
            }
        }
    }
}

/// Why `tree` is not a valid `K`: the path of the offending field and serde's reason, with
/// quoted values left out (a value may be a participant's name or email).
fn why<K: DeserializeOwned>(tree: &Value) -> String {
    match serde_path_to_error::deserialize::<_, K>(tree) {
        Ok(_) => "does not deserialize".into(),
        Err(e) => format!("{}: {}", e.path(), redact(&e.inner().to_string())),
    }
}

/// `text` with every double-quoted string replaced by `"…"`.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        out.push('…');
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
        out.push('"');
    }
    out
}

/// Only for kube's bounds; never sent.
impl<K: Serialize> Serialize for Lenient<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Valid(k) => k.serialize(serializer),
            Lenient::Invalid { metadata, .. } => metadata.serialize(serializer),
        }
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta_mut(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Meeting;
    use kube::ResourceExt;
    use kube::core::ObjectList;
    use kube::core::WatchEvent;

    #[test]
    fn one_bad_item_does_not_fail_the_list() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "7"}, "items": [
            {"apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
             "metadata": {"name": "good", "namespace": "ns"}, "spec": {"bridge": "meet"}},
            {"apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
             "metadata": {"name": "old", "namespace": "ns", "resourceVersion": "5"},
             "spec": {"bridge": "meet", "participants": "alice,bob"}}
        ]}"#;
        let list: ObjectList<Lenient<Meeting>> = serde_json::from_str(list).expect("the list parses");
        let items = list.items;
        assert!(matches!(&items[0], Lenient::Valid(m) if m.spec.bridge == "meet"));
        let Lenient::Invalid { metadata, error } = &items[1] else {
            panic!("the bad item is Invalid: {:?}", items[1]);
        };
        assert_eq!(metadata.name.as_deref(), Some("old"));
        assert!(error.starts_with("spec.participants: invalid type: string"), "{error}");
        assert!(!error.contains("alice"), "values stay out of the message: {error}");
        assert_eq!(items[1].resource_version().as_deref(), Some("5"));
    }

    #[test]
    fn a_bad_object_in_a_watch_event_keeps_its_metadata() {
        let line = r#"{"type": "MODIFIED", "object": {"apiVersion": "conclave.dev/v1alpha1",
            "kind": "Meeting", "metadata": {"name": "old", "resourceVersion": "9"}, "spec": {}}}"#;
        let event: WatchEvent<Lenient<Meeting>> = serde_json::from_str(line).expect("the event parses");
        let WatchEvent::Modified(Lenient::Invalid { metadata, error }) = event else {
            panic!("an Invalid object");
        };
        assert_eq!(metadata.resource_version.as_deref(), Some("9"));
        assert!(error.contains("bridge"), "{error}");
    }

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact(r#"invalid type: string "a \"b\" c", expected x"#),
            r#"invalid type: string "…", expected x"#
        );
        assert_eq!(redact("unknown field `x`"), "unknown field `x`");
    }
}
