//! Join tokens in the shape Jitsi's token authentication accepts: HS256 JWTs signed with the
//! Bridge's app secret, scoped to exactly one room (never a wildcard), with the participant's
//! identity and role. Claims are a pure function of their inputs, so re-issuing for an
//! unchanged Meeting yields byte-identical tokens and costs no write.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::prosody::JWT_APP_ID;
use crate::meeting::schedule::Window;

/// The claims of a join token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Always [`JWT_APP_ID`]: the only issuer prosody accepts.
    pub iss: String,
    /// Always [`JWT_APP_ID`]: the only audience prosody accepts.
    pub aud: String,
    /// The Bridge's domain (what `JWT_ENABLE_DOMAIN_VERIFICATION` would check).
    pub sub: String,
    /// Exactly one room.
    pub room: String,
    /// Set to `nbf`, not to the signing time, so the token is deterministic.
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub context: Context,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Context {
    pub user: User,
}

/// `context.user`. lib-jitsi-meet needs its text fields to be strings, never null.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `owner` for moderators (read by prosody's `token_affiliation`), `member` otherwise.
    pub affiliation: String,
    /// `"true"`/`"false"`; the same role, in the form other Jitsi token modules read.
    pub moderator: String,
    /// Sends the holder to the lobby (`token_lobby_ondemand`); only on guest links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<bool>,
}

/// Who a token is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub moderator: bool,
    pub lobby: bool,
}

pub fn claims(domain: &str, room: &str, who: &Identity, window: Window) -> Claims {
    Claims {
        iss: JWT_APP_ID.into(),
        aud: JWT_APP_ID.into(),
        sub: domain.into(),
        room: room.into(),
        iat: window.not_before.timestamp(),
        nbf: window.not_before.timestamp(),
        exp: window.expires.timestamp(),
        context: Context {
            user: User {
                id: who.id.clone(),
                name: who.name.clone(),
                email: who.email.clone(),
                affiliation: if who.moderator { "owner" } else { "member" }.into(),
                moderator: who.moderator.to_string(),
                lobby: who.lobby.then_some(true),
            },
        },
    }
}

/// Signs claims with the app secret: HS256, `typ: JWT` (prosody refuses any other `typ`).
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
}

/// Verifies a token the way prosody does (signature, issuer, audience, times) and returns its
/// claims. Used by tests and by anyone checking a link by hand.
pub fn verify(token: &str, secret: &[u8]) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[JWT_APP_ID]);
    v.set_audience(&[JWT_APP_ID]);
    v.validate_nbf = true;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
    Ok(jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)?.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    fn window() -> Window {
        let now = Utc::now();
        Window {
            not_before: now - Duration::minutes(1),
            expires: now + Duration::hours(1),
        }
    }

    fn alice() -> Identity {
        Identity {
            id: "alice".into(),
            name: "Alice".into(),
            email: Some("alice@example.com".into()),
            moderator: true,
            lobby: false,
        }
    }

    #[test]
    fn signed_tokens_verify_and_carry_the_room_and_role() {
        let w = window();
        let token = sign(&claims("meet.example.com", "standup", &alice(), w), b"secret").expect("sign");
        let c = verify(&token, b"secret").expect("verify");
        assert_eq!(c.room, "standup");
        assert_eq!(c.iss, "conclave");
        assert_eq!(c.aud, "conclave");
        assert_eq!(c.context.user.affiliation, "owner");
        assert_eq!(c.context.user.moderator, "true");
        assert_eq!(c.nbf, w.not_before.timestamp());
        assert_eq!(c.exp, w.expires.timestamp());
        assert!(verify(&token, b"other").is_err(), "another secret must not verify");
    }

    #[test]
    fn tokens_are_deterministic() {
        let w = window();
        let c = claims("meet.example.com", "standup", &alice(), w);
        assert_eq!(sign(&c, b"k").expect("sign"), sign(&c, b"k").expect("sign"));
    }

    #[test]
    fn header_is_hs256_jwt_and_guest_lobby_flag_is_only_set_when_asked() {
        let w = window();
        let token = sign(&claims("d", "r", &alice(), w), b"k").expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let body = serde_json::to_value(claims("d", "r", &alice(), w)).expect("json");
        assert!(body["context"]["user"].get("lobby").is_none());
        let guest = Identity {
            lobby: true,
            moderator: false,
            ..alice()
        };
        let body = serde_json::to_value(claims("d", "r", &guest, w)).expect("json");
        assert_eq!(body["context"]["user"]["lobby"], true);
        assert_eq!(body["context"]["user"]["affiliation"], "member");
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let now = Utc::now();
        let past = Window {
            not_before: now - Duration::hours(2),
            expires: now - Duration::hours(1),
        };
        let future = Window {
            not_before: now + Duration::hours(1),
            expires: now + Duration::hours(2),
        };
        for w in [past, future] {
            let token = sign(&claims("d", "r", &alice(), w), b"k").expect("sign");
            assert!(verify(&token, b"k").is_err());
        }
    }
}
