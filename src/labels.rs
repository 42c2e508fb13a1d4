//! The one label set and the one naming scheme for everything Conclave creates.

use std::collections::BTreeMap;

/// Field manager for every server-side apply Conclave sends.
pub const FIELD_MANAGER: &str = "conclave";
/// `app.kubernetes.io/managed-by` value; also how orphans are found.
pub const MANAGED_BY: &str = "conclave";

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// Which kind of parent a child belongs to (`bridge` or `meeting`), so the two
/// reconcilers never prune each other's children.
pub const OWNER_KIND: &str = "conclave.dev/owner-kind";
/// Index of an SFU replica.
pub const SFU_INDEX: &str = "conclave.dev/sfu-index";

/// A component of a Bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Secrets,
    Certificate,
    Prosody,
    Jicofo,
    Web,
    Sfu,
    Turn,
    Network,
    Credentials,
    Redis,
    E2eeKey,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Secrets => "secrets",
            Component::Certificate => "certificate",
            Component::Prosody => "prosody",
            Component::Jicofo => "jicofo",
            Component::Web => "web",
            Component::Sfu => "sfu",
            Component::Turn => "turn",
            Component::Network => "network",
            Component::Credentials => "credentials",
            Component::Redis => "redis",
            Component::E2eeKey => "e2ee-key",
        }
    }
}

/// Labels that select the pods of one component of one parent. Stable for the life of the
/// parent: they are Deployment selectors, which are immutable.
pub fn selector(owner_kind: &str, instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), "conclave".to_string()),
        (INSTANCE.to_string(), instance.to_string()),
        (COMPONENT.to_string(), component.as_str().to_string()),
        (OWNER_KIND.to_string(), owner_kind.to_string()),
    ])
}

/// Full label set of a child: the selector plus `managed-by` and `part-of`. The parent's own
/// labels are deliberately not copied: GitOps tools track objects by label, and copying theirs
/// would make them claim (and prune) objects they did not create.
pub fn labels(owner_kind: &str, instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut l = selector(owner_kind, instance, component);
    l.insert(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string());
    l.insert(PART_OF.to_string(), "conclave".to_string());
    l
}

/// Label selector string that finds every child of one parent.
pub fn children_selector(owner_kind: &str, instance: &str) -> String {
    format!("{MANAGED_BY_KEY}={MANAGED_BY},{OWNER_KIND}={owner_kind},{INSTANCE}={instance}")
}

/// Name of a child: `<parent>-<suffix>`. Kubernetes names are at most 253 characters and
/// Service names at most 63; a parent name long enough to overflow is shortened with a stable
/// hash so two parents never collide.
pub fn child_name(parent: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    let full = format!("{parent}-{suffix}");
    if full.len() <= MAX {
        return full;
    }
    // The low 32 bits are plenty to keep two long parent names apart.
    let hash = stable_hash(parent.as_bytes()) as u32;
    let keep = MAX - suffix.len() - 10; // '-' + 8 hex + '-'
    let head: String = parent.chars().take(keep).collect();
    format!("{}-{hash:08x}-{suffix}", head.trim_end_matches(['-', '.']))
}

/// 64-bit FNV-1a: a short, stable, non-cryptographic hash, identical on every operator replica
/// and across releases. The one hash for names and content fingerprints.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A short, stable hash of some content (64-bit FNV-1a, 16 hex digits). Not cryptographic:
/// it only has to change when the content does, identically on every operator replica.
pub fn content_hash(content: &str) -> String {
    format!("{:016x}", stable_hash(content.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_plain() {
        assert_eq!(child_name("meet", "prosody"), "meet-prosody");
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = "a".repeat(80);
        let b = format!("{}b", "a".repeat(79));
        let (na, nb) = (child_name(&a, "sfu-12"), child_name(&b, "sfu-12"));
        assert!(na.len() <= 63 && nb.len() <= 63, "{na} {nb}");
        assert_ne!(na, nb);
        assert!(na.ends_with("-sfu-12"));
        assert_eq!(na, child_name(&a, "sfu-12"), "stable");
    }

    #[test]
    fn labels_extend_selector() {
        let l = labels("bridge", "meet", Component::Sfu);
        for (k, v) in selector("bridge", "meet", Component::Sfu) {
            assert_eq!(l.get(&k), Some(&v));
        }
        assert_eq!(l.get(MANAGED_BY_KEY).map(String::as_str), Some("conclave"));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(content_hash(""), "cbf29ce484222325");
        assert_eq!(content_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(content_hash("x=1"), content_hash("x=2"));
    }
}
