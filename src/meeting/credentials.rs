//! The credentials Secret of a Meeting: one join link per participant, plus `guest` when
//! guests may join. Pure: the same Meeting, keys and window always give the same Secret. The
//! links' shape is the engine's: Jitsi's `?jwt=` here, LiveKit's in
//! [`crate::engine::livekit::links`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::schedule::Window;
use crate::api::meeting::MeetingSpec;
use crate::engine::jitsi::token::{self, Identity};
use crate::engine::livekit::links as livekit;
use crate::labels::{self, Component};

/// Name suffix of the credentials Secret.
pub const SUFFIX: &str = "credentials";

/// Key of the shared guest link.
pub const GUEST_KEY: &str = "guest";
/// Annotations recording the tokens' window, so a standing room keeps its tokens until they
/// are due for renewal (values are RFC 3339 instants).
pub const VALID_FROM_ANNOTATION: &str = "conclave.dev/valid-from";
pub const VALID_UNTIL_ANNOTATION: &str = "conclave.dev/valid-until";

/// What a credentials Secret is made from.
pub struct Input<'a> {
    pub domain: &'a str,
    pub room: &'a str,
    pub spec: &'a MeetingSpec,
    pub signer: Signer<'a>,
    pub window: Window,
}

/// What the links are signed with, by engine. No `Debug`: it holds secrets.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    /// A Jitsi Bridge without authentication: links are the plain room URL.
    Open,
    /// A Jitsi Bridge's app secret.
    Jitsi(&'a [u8]),
    /// A LiveKit Bridge's API key and secret, and the Meeting's E2EE settings and passphrase.
    LiveKit(livekit::Keys<'a>),
}

/// Name of the credentials Secret of Meeting `meeting`.
pub fn secret_name(meeting: &str) -> String {
    labels::child_name(meeting, SUFFIX)
}

/// Metadata of the credentials Secret: its name, the Meeting's labels and its controller
/// reference.
pub fn meta(meeting: &str, namespace: &str, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(secret_name(meeting)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels::labels(super::OWNER_KIND, meeting, Component::Credentials)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The Secret's keys: one per participant, then `guest` when guests may join.
pub fn keys(spec: &MeetingSpec) -> Vec<String> {
    let mut keys: Vec<String> = spec.participants.iter().map(|p| p.name.clone()).collect();
    if spec.guests.allowed {
        keys.push(GUEST_KEY.to_string());
    }
    keys
}

/// The join links, by Secret key.
pub fn links(input: &Input<'_>) -> Result<BTreeMap<String, String>, jsonwebtoken::errors::Error> {
    let url = super::room_url(input.domain, input.room);
    let app_secret = match input.signer {
        Signer::LiveKit(keys) => return livekit::links(input.domain, input.room, input.spec, &keys, input.window),
        Signer::Jitsi(secret) => Some(secret),
        Signer::Open => None,
    };
    let mut who: Vec<(String, Identity)> = input
        .spec
        .participants
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                Identity {
                    id: p.name.clone(),
                    name: p.display_name.clone().unwrap_or_else(|| p.name.clone()),
                    email: p.email.clone(),
                    moderator: p.moderator,
                    lobby: false,
                },
            )
        })
        .collect();
    if input.spec.guests.allowed {
        who.push((
            GUEST_KEY.to_string(),
            Identity {
                id: GUEST_KEY.into(),
                name: "Guest".into(),
                email: None,
                moderator: false,
                lobby: input.spec.guests.lobby,
            },
        ));
    }
    let mut out = BTreeMap::new();
    for (key, identity) in who {
        let link = match app_secret {
            Some(secret) => {
                let claims = token::claims(input.domain, input.room, &identity, input.window);
                format!("{url}?jwt={}", token::sign(&claims, secret)?)
            }
            None => url.clone(),
        };
        out.insert(key, link);
    }
    Ok(out)
}

/// The Secret, given its metadata (name, labels, owner) from the reconciler.
pub fn secret(mut meta: ObjectMeta, input: &Input<'_>) -> Result<Secret, jsonwebtoken::errors::Error> {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    meta.annotations = Some(BTreeMap::from([
        (VALID_FROM_ANNOTATION.to_string(), fmt(input.window.not_before)),
        (VALID_UNTIL_ANNOTATION.to_string(), fmt(input.window.expires)),
    ]));
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(
            links(input)?
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
}

/// A digest of everything the operator sets on a credentials Secret: its type, its data (every
/// key, so a key someone added is drift too), its own labels and annotations, and its
/// controller. The cache keeps this instead of the links: the reconciler compares the digest of
/// the Secret it would write with the live one's, and writes only when they differ.
pub fn digest(secret: &Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    // Deterministic within a process, which is all a cache needs.
    let mut h = std::hash::DefaultHasher::new();
    secret.type_.hash(&mut h);
    for (k, v) in secret.data.iter().flatten() {
        (k, &v.0).hash(&mut h);
    }
    let ours = |k: &&String| k.starts_with("app.kubernetes.io/") || k.starts_with("conclave.dev/");
    for (k, v) in secret.metadata.labels.iter().flatten().filter(|(k, _)| ours(k)) {
        (0u8, k, v).hash(&mut h);
    }
    for (k, v) in secret.metadata.annotations.iter().flatten().filter(|(k, _)| ours(k)) {
        (1u8, k, v).hash(&mut h);
    }
    for o in secret.metadata.owner_references.iter().flatten() {
        (&o.uid, o.controller).hash(&mut h);
    }
    h.finish()
}

/// The window recorded on a live Secret's annotations.
pub fn recorded_window(annotations: &BTreeMap<String, String>) -> Option<Window> {
    let get = |k: &str| annotations.get(k)?.parse().ok();
    Some(Window {
        not_before: get(VALID_FROM_ANNOTATION)?,
        expires: get(VALID_UNTIL_ANNOTATION)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn spec() -> MeetingSpec {
        serde_json::from_value(serde_json::json!({
            "bridge": "meet",
            "participants": [
                {"name": "alice", "displayName": "Alice L.", "email": "alice@example.com", "moderator": true},
                {"name": "bob"}
            ],
            "guests": {"allowed": true, "lobby": true}
        }))
        .expect("spec")
    }

    fn window() -> Window {
        let now: DateTime<Utc> = Utc::now();
        Window {
            not_before: now - chrono::Duration::minutes(1),
            expires: now + chrono::Duration::hours(1),
        }
    }

    #[test]
    fn one_link_per_participant_and_a_guest_link() {
        let s = spec();
        let w = window();
        let input = Input {
            domain: "meet.example.com",
            room: "standup",
            spec: &s,
            signer: Signer::Jitsi(b"k"),
            window: w,
        };
        let links = links(&input).expect("links");
        assert_eq!(links.keys().collect::<Vec<_>>(), vec!["alice", "bob", "guest"]);
        let token = |k: &str| {
            let link = &links[k];
            let t = link
                .strip_prefix("https://meet.example.com/standup?jwt=")
                .expect("link shape");
            token::verify(t, b"k").expect("verifies")
        };
        let a = token("alice");
        assert_eq!(
            (a.context.user.name.as_str(), a.context.user.moderator.as_str()),
            ("Alice L.", "true")
        );
        assert_eq!(a.context.user.email.as_deref(), Some("alice@example.com"));
        let b = token("bob");
        assert_eq!(
            (b.context.user.name.as_str(), b.context.user.affiliation.as_str()),
            ("bob", "member")
        );
        assert_eq!(token("guest").context.user.lobby, Some(true));
        assert!(links.values().all(|l| !l.contains("room\":\"*")));
    }

    #[test]
    fn open_bridges_get_plain_room_links_and_windows_round_trip() {
        let s = spec();
        let w = window();
        let input = Input {
            domain: "meet.example.com",
            room: "standup",
            spec: &s,
            signer: Signer::Open,
            window: w,
        };
        assert!(
            links(&input)
                .expect("links")
                .values()
                .all(|l| l == "https://meet.example.com/standup")
        );
        let secret = secret(ObjectMeta::default(), &input).expect("secret");
        let recorded = recorded_window(&secret.metadata.annotations.clone().expect("annotations")).expect("window");
        assert_eq!(recorded.expires.timestamp(), w.expires.timestamp());

        // The digest sees our data and metadata, not what other tools add to the metadata.
        let base = digest(&secret);
        let mut other = secret.clone();
        other.metadata.labels = Some(BTreeMap::from([("team".to_string(), "x".to_string())]));
        other.metadata.resource_version = Some("42".into());
        assert_eq!(digest(&other), base);
        let mut added = secret.clone();
        added
            .data
            .as_mut()
            .expect("data")
            .insert("mallory".into(), ByteString(b"x".to_vec()));
        assert_ne!(digest(&added), base, "an added key is drift");
        let mut edited = secret.clone();
        edited
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(VALID_UNTIL_ANNOTATION.into(), "2000-01-01T00:00:00Z".into());
        assert_ne!(digest(&edited), base);
    }
}
