//! The join links of a Meeting on a LiveKit Bridge, one per participant:
//! `https://<domain>/<room>?token=<access token>#key=<K>`, and for guests
//! `https://<domain>/<room>?guest=<guest token>#key=<K>`.
//!
//! K is the Meeting's shared E2EE passphrase (32 random bytes, base64url), which every client
//! turns into the same key with LiveKit's own derivation. It rides in the fragment, which
//! browsers never send to a server; with `keyDistribution: OutOfBand` there is no fragment and
//! the page asks for the passphrase. Tokens are deterministic (see [`super::token`]), so an
//! unchanged Meeting re-issues byte-identical links.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::token::{self, Grant, Policy};
use crate::api::E2eePolicy;
use crate::api::meeting::{KeyDistribution, MeetingSpec};
use crate::meeting::schedule::Window;

/// Identity of the guest token: not a participant, and no participant may be called this.
pub const GUEST_IDENTITY: &str = "guest";

/// What LiveKit links are signed and keyed with.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub api_key: &'a str,
    pub api_secret: &'a [u8],
    /// The Meeting's effective E2EE policy.
    pub e2ee: E2eePolicy,
    pub key_distribution: KeyDistribution,
    /// K; `None` with `OutOfBand`.
    pub passphrase: Option<&'a str>,
}

impl std::fmt::Debug for Keys<'_> {
    // The secret and the passphrase must never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("api_key", &self.api_key)
            .field("e2ee", &self.e2ee)
            .field("key_distribution", &self.key_distribution)
            .finish_non_exhaustive()
    }
}

/// A new E2EE passphrase: 32 random bytes, base64url without padding (43 characters, safe in
/// a URL fragment as it stands).
pub fn new_passphrase() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The links by credentials-Secret key: one per participant, then `guest` when guests are
/// allowed. `url` is the room's URL.
pub fn links(
    url: &str,
    room: &str,
    spec: &MeetingSpec,
    keys: &Keys<'_>,
    window: Window,
) -> Result<BTreeMap<String, String>, jsonwebtoken::errors::Error> {
    let fragment = match (keys.key_distribution, keys.passphrase) {
        (KeyDistribution::Link, Some(k)) => format!("#key={k}"),
        _ => String::new(),
    };
    let policy = |guest: bool, lobby: bool| Policy {
        e2ee: keys.e2ee.as_str().into(),
        key_distribution: keys.key_distribution.as_str().into(),
        guest,
        lobby,
    };
    let sign = |grant: &Grant, policy: &Policy| {
        let c = token::claims(
            keys.api_key,
            grant,
            policy,
            window.not_before.timestamp(),
            window.expires.timestamp(),
        )
        .map_err(jsonwebtoken::errors::Error::from)?;
        token::sign(&c, keys.api_secret)
    };
    let mut out = BTreeMap::new();
    for p in &spec.participants {
        let grant = Grant {
            identity: p.name.clone(),
            name: Some(p.display_name.clone().unwrap_or_else(|| p.name.clone())),
            room: room.to_string(),
            join: true,
            publish: true,
            subscribe: true,
            moderator: p.moderator,
        };
        let t = sign(&grant, &policy(false, false))?;
        out.insert(p.name.clone(), format!("{url}?token={t}{fragment}"));
    }
    if spec.guests.allowed {
        let grant = Grant {
            identity: GUEST_IDENTITY.into(),
            name: None,
            room: room.to_string(),
            join: false,
            publish: false,
            subscribe: false,
            moderator: false,
        };
        let t = sign(&grant, &policy(true, spec.guests.lobby))?;
        out.insert(
            crate::meeting::credentials::GUEST_KEY.to_string(),
            format!("{url}?guest={t}{fragment}"),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;

    const SECRET: &[u8] = b"an-api-secret-of-at-least-32-characters";

    fn spec() -> MeetingSpec {
        serde_json::from_value(serde_json::json!({
            "bridge": "meet",
            "participants": [
                {"name": "alice", "displayName": "Alice L.", "moderator": true},
                {"name": "bob"}
            ],
            "guests": {"allowed": true, "lobby": true}
        }))
        .expect("spec")
    }

    fn window() -> Window {
        let now = Utc::now();
        Window {
            not_before: now - Duration::minutes(1),
            expires: now + Duration::hours(1),
        }
    }

    fn keys(passphrase: Option<&str>, kd: KeyDistribution) -> Keys<'_> {
        Keys {
            api_key: "APIkey",
            api_secret: SECRET,
            e2ee: E2eePolicy::Required,
            key_distribution: kd,
            passphrase,
        }
    }

    fn split(link: &str, param: &str) -> (String, Option<String>) {
        let rest = link
            .strip_prefix(&format!("https://meet.example.com/standup?{param}="))
            .unwrap_or_else(|| panic!("link shape: {link}"));
        match rest.split_once('#') {
            Some((t, f)) => (t.to_string(), Some(f.to_string())),
            None => (rest.to_string(), None),
        }
    }

    #[test]
    fn every_participant_gets_a_token_and_the_key_in_the_fragment() {
        let w = window();
        let k = new_passphrase();
        assert_eq!(k.len(), 43);
        let links = links(
            "https://meet.example.com/standup",
            "standup",
            &spec(),
            &keys(Some(&k), KeyDistribution::Link),
            w,
        )
        .expect("links");
        assert_eq!(links.keys().collect::<Vec<_>>(), ["alice", "bob", "guest"]);
        let (t, fragment) = split(&links["alice"], "token");
        assert_eq!(fragment, Some(format!("key={k}")));
        let c = token::verify(&t, SECRET).expect("verifies");
        assert_eq!((c.iss.as_str(), c.sub.as_str()), ("APIkey", "alice"));
        assert_eq!(c.name.as_deref(), Some("Alice L."));
        assert!(c.video.room_join && c.video.room_admin);
        assert_eq!(c.video.room, "standup");
        assert_eq!((c.nbf, c.exp), (w.not_before.timestamp(), w.expires.timestamp()));
        let meta: Policy = serde_json::from_str(c.metadata.as_deref().expect("metadata")).expect("policy");
        assert_eq!(
            (meta.e2ee.as_str(), meta.key_distribution.as_str()),
            ("Required", "Link")
        );
        let b = token::verify(&split(&links["bob"], "token").0, SECRET).expect("bob");
        assert_eq!(b.name.as_deref(), Some("bob"));
        assert!(!b.video.room_admin);
        assert!(
            !c.metadata.unwrap_or_default().contains(&k),
            "the key is never in a token"
        );
    }

    #[test]
    fn the_guest_link_cannot_join_by_itself() {
        let k = new_passphrase();
        let links = links(
            "https://meet.example.com/standup",
            "standup",
            &spec(),
            &keys(Some(&k), KeyDistribution::Link),
            window(),
        )
        .expect("links");
        let (t, fragment) = split(&links["guest"], "guest");
        assert_eq!(fragment, Some(format!("key={k}")));
        let c = token::verify(&t, SECRET).expect("verifies");
        assert_eq!(c.sub, GUEST_IDENTITY);
        assert!(!c.video.room_join);
        let meta: Policy = serde_json::from_str(c.metadata.as_deref().expect("metadata")).expect("policy");
        assert!(meta.guest && meta.lobby);
    }

    #[test]
    fn out_of_band_links_carry_no_key_and_links_are_deterministic() {
        let w = window();
        let make = || {
            links(
                "https://meet.example.com/standup",
                "standup",
                &spec(),
                &keys(None, KeyDistribution::OutOfBand),
                w,
            )
            .expect("links")
        };
        let a = make();
        assert!(a.values().all(|l| !l.contains('#')), "{a:?}");
        assert_eq!(a, make(), "same Meeting, same links");
        let meta = token::verify(&split(&a["bob"], "token").0, SECRET)
            .expect("bob")
            .metadata;
        assert!(meta.unwrap_or_default().contains("\"keyDistribution\":\"OutOfBand\""));
    }
}
