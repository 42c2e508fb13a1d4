//! The join links of a Meeting on a LiveKit Bridge, one per participant:
//! `https://<domain>/<room>?token=<access token>#key=<K>`, and for guests
//! `https://<domain>/<room>?guest=<guest token>#key=<K>`.
//!
//! K is the Meeting's shared E2EE passphrase (32 random bytes, base64url), which every client
//! turns into the same key with LiveKit's own derivation. It rides in the fragment, which
//! browsers never send to a server; with `keyDistribution: OutOfBand` there is no fragment and
//! the page asks for the passphrase. Tokens and links are [`super::token`]'s, deterministic, so
//! an unchanged Meeting re-issues byte-identical links.

use std::collections::BTreeMap;

use super::token::{self, Participant, Policy};
use crate::api::E2eePolicy;
use crate::api::meeting::{KeyDistribution, MeetingSpec};
use crate::meeting::credentials::GUEST_KEY;
use crate::meeting::schedule::Window;

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

/// The links by credentials-Secret key: one per participant, then `guest` when guests are
/// allowed.
pub fn links(
    domain: &str,
    room: &str,
    spec: &MeetingSpec,
    keys: &Keys<'_>,
    window: Window,
) -> Result<BTreeMap<String, String>, jsonwebtoken::errors::Error> {
    let policy = Policy {
        e2ee: keys.e2ee,
        key_distribution: keys.key_distribution,
    };
    let key = match keys.key_distribution {
        KeyDistribution::Link => keys.passphrase,
        KeyDistribution::OutOfBand => None,
    };
    let mut out = BTreeMap::new();
    for p in &spec.participants {
        let who = Participant {
            identity: &p.name,
            name: p.display_name.as_deref().unwrap_or(&p.name),
            moderator: p.moderator,
        };
        let t = token::sign(
            &token::access_claims(keys.api_key, room, who, policy, window),
            keys.api_secret,
        )?;
        out.insert(p.name.clone(), token::join_link(domain, room, &t, key));
    }
    if spec.guests.allowed {
        let claims = token::guest_claims(keys.api_key, room, policy, spec.guests.lobby, window);
        let t = token::sign(&claims, keys.api_secret)?;
        out.insert(GUEST_KEY.to_string(), token::guest_link(domain, room, &t, key));
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
        let k = token::new_passphrase();
        let links = links(
            "meet.example.com",
            "standup",
            &spec(),
            &keys(Some(&k), KeyDistribution::Link),
            w,
        )
        .expect("links");
        assert_eq!(links.keys().collect::<Vec<_>>(), ["alice", "bob", "guest"]);
        let (t, fragment) = split(&links["alice"], "token");
        assert_eq!(fragment, Some(format!("key={k}")));
        let c = token::verify(&t, "APIkey", SECRET).expect("verifies");
        assert_eq!(
            (c.iss.as_str(), c.sub.as_str(), c.name.as_str()),
            ("APIkey", "alice", "Alice L.")
        );
        assert!(c.video.room_join && c.video.room_admin);
        assert_eq!(c.video.room, "standup");
        assert_eq!((c.nbf, c.exp), (w.not_before.timestamp(), w.expires.timestamp()));
        let meta = token::page_metadata(&c).expect("metadata");
        assert_eq!(
            (meta.e2ee, meta.key_distribution),
            (E2eePolicy::Required, KeyDistribution::Link)
        );
        let b = token::verify(&split(&links["bob"], "token").0, "APIkey", SECRET).expect("bob");
        assert_eq!(b.name, "bob");
        assert!(!b.video.room_admin);
        assert!(!c.metadata.contains(&k), "the key is never in a token");
    }

    #[test]
    fn the_guest_link_cannot_join_by_itself() {
        let k = token::new_passphrase();
        let links = links(
            "meet.example.com",
            "standup",
            &spec(),
            &keys(Some(&k), KeyDistribution::Link),
            window(),
        )
        .expect("links");
        let (t, fragment) = split(&links["guest"], "guest");
        assert_eq!(fragment, Some(format!("key={k}")));
        let c = token::verify(&t, "APIkey", SECRET).expect("verifies");
        assert_eq!(c.sub, token::GUEST_SUBJECT);
        assert!(!c.video.room_join);
        let meta = token::page_metadata(&c).expect("metadata");
        assert_eq!((meta.guest, meta.lobby), (Some(true), Some(true)));
    }

    #[test]
    fn out_of_band_links_carry_no_key_and_links_are_deterministic() {
        let w = window();
        let k = token::new_passphrase();
        let make = || {
            links(
                "meet.example.com",
                "standup",
                &spec(),
                &keys(Some(&k), KeyDistribution::OutOfBand),
                w,
            )
            .expect("links")
        };
        let a = make();
        assert!(
            a.values().all(|l| !l.contains('#')),
            "OutOfBand never carries a key: {a:?}"
        );
        assert_eq!(a, make(), "same Meeting, same links");
        let c = token::verify(&split(&a["bob"], "token").0, "APIkey", SECRET).expect("bob");
        assert_eq!(
            token::page_metadata(&c).expect("metadata").key_distribution,
            KeyDistribution::OutOfBand
        );
    }
}
