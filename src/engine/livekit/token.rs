//! LiveKit access tokens: HS256 JWTs signed with the Bridge's LiveKit API secret, `iss` the API
//! key, `sub` the participant's identity, and a `video` grant for exactly one room. Claims are a
//! pure function of their inputs (no random id, `iat` absent, `nbf`/`exp` the join window), so
//! re-issuing for an unchanged Meeting yields byte-identical tokens and costs no write.
//!
//! The `metadata` claim carries the room's E2EE policy for the join page, which reads it before
//! connecting; LiveKit passes it on as the participant's metadata. It holds no key and nothing
//! about the person.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a LiveKit access token (the subset Conclave issues).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The API key; LiveKit looks the signing secret up by it.
    pub iss: String,
    /// The participant's identity, unique in the room (a second join with it evicts the first).
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub nbf: i64,
    pub exp: i64,
    pub video: VideoGrant,
    /// JSON: [`Policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// LiveKit's `video` grant. Every permission is written out: LiveKit reads an absent one as
/// allowed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    pub room: String,
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_admin: bool,
}

/// What the join page must know before it connects, carried in the token's `metadata`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `Required` or `Preferred`.
    pub e2ee: String,
    /// `Link` (the key is in the link's fragment) or `OutOfBand` (the page asks for it).
    pub key_distribution: String,
    /// A guest link, to be exchanged by `conclave web` for a token of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
    /// Guests wait in the lobby until a moderator admits them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lobby: bool,
}

/// Who a token is for and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub identity: String,
    pub name: Option<String>,
    pub room: String,
    /// `false` for a guest link, which cannot join by itself.
    pub join: bool,
    pub publish: bool,
    pub subscribe: bool,
    pub moderator: bool,
}

/// The claims for `grant`, valid from `nbf` to `exp` (Unix seconds).
pub fn claims(api_key: &str, grant: &Grant, policy: &Policy, nbf: i64, exp: i64) -> Result<Claims, serde_json::Error> {
    Ok(Claims {
        iss: api_key.into(),
        sub: grant.identity.clone(),
        name: grant.name.clone(),
        nbf,
        exp,
        // A token that cannot join grants nothing else either: the guest link's grant is
        // exactly `{room, roomJoin: false}`, and `conclave web` decides what a guest may do.
        video: VideoGrant {
            room: grant.room.clone(),
            room_join: grant.join,
            can_publish: grant.join.then_some(grant.publish),
            can_subscribe: grant.join.then_some(grant.subscribe),
            can_publish_data: grant.join.then_some(grant.publish),
            room_admin: grant.join && grant.moderator,
        },
        metadata: Some(serde_json::to_string(policy)?),
    })
}

/// Signs claims with the API secret (HS256, `typ: JWT`).
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
}

/// Verifies a token as LiveKit does (signature, `nbf`, `exp`) and returns its claims.
pub fn verify(token: &str, secret: &[u8]) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_nbf = true;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    Ok(jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)?.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            identity: "alice".into(),
            name: Some("Alice L.".into()),
            room: "standup".into(),
            join: true,
            publish: true,
            subscribe: true,
            moderator: true,
        }
    }

    fn policy() -> Policy {
        Policy {
            e2ee: "Required".into(),
            key_distribution: "Link".into(),
            guest: false,
            lobby: false,
        }
    }

    #[test]
    fn claims_have_livekits_shape() {
        let now = chrono::Utc::now().timestamp();
        let c = claims("APIkey", &grant(), &policy(), now - 60, now + 3600).expect("claims");
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["iss"], "APIkey");
        assert_eq!(v["sub"], "alice");
        assert_eq!(v["video"]["room"], "standup");
        assert_eq!(v["video"]["roomJoin"], true);
        assert_eq!(v["video"]["canPublishData"], true);
        assert_eq!(v["video"]["roomAdmin"], true);
        assert!(v.get("iat").is_none() && v.get("jti").is_none(), "deterministic");
        let meta: Policy = serde_json::from_str(v["metadata"].as_str().expect("string")).expect("policy");
        assert_eq!(meta, policy());
    }

    #[test]
    fn sign_verify_and_refuse() {
        let now = chrono::Utc::now().timestamp();
        let c = claims("k", &grant(), &policy(), now - 60, now + 3600).expect("claims");
        let t = sign(&c, b"secret-secret-secret-secret-secret").expect("sign");
        assert_eq!(t, sign(&c, b"secret-secret-secret-secret-secret").expect("again"));
        assert_eq!(verify(&t, b"secret-secret-secret-secret-secret").expect("valid"), c);
        assert!(verify(&t, b"another-secret-another-secret-xx").is_err());
        let expired = claims("k", &grant(), &policy(), now - 7200, now - 3600).expect("claims");
        let t = sign(&expired, b"s").expect("sign");
        assert!(verify(&t, b"s").is_err(), "expired");
    }

    #[test]
    fn a_guest_link_cannot_join() {
        let g = Grant {
            identity: "guest".into(),
            join: false,
            moderator: false,
            ..grant()
        };
        let c = claims("k", &g, &policy(), 0, 1).expect("claims");
        assert!(!c.video.room_join);
        assert!(!c.video.room_admin);
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["video"], serde_json::json!({"room": "standup", "roomJoin": false}));
    }
}
