//! LiveKit access tokens and the join links that carry them.
//!
//! An access token is an HS256 JWT signed with the Bridge's LiveKit API secret: `iss` is the API
//! key, `sub` the participant's identity (LiveKit disconnects a second participant with the
//! same identity), `name` the display name, a `video` grant for exactly one room, and
//! `metadata`: a JSON string the join page reads to learn the Meeting's E2EE policy and how its
//! key is distributed. Claims are a pure function of their inputs (`iat` = `nbf`, no random
//! `jti`), so re-issuing for an unchanged Meeting yields byte-identical tokens.
//!
//! A guest token has the same shape but `sub` = `guest` and `roomJoin: false`: LiveKit refuses
//! it, and only `conclave web` turns it into an access token, with a fresh identity per guest.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::api::common::E2eePolicy;
use crate::meeting::schedule::Window;

/// `sub` of every guest token; no participant can be called this (the Meeting's CEL rule).
pub const GUEST_SUBJECT: &str = "guest";
/// Prefix of the identities `conclave web` gives guests.
pub const GUEST_IDENTITY_PREFIX: &str = "guest-";
/// Participant attribute that marks a guest waiting in the lobby; a moderator's Admit clears it.
pub const LOBBY_ATTRIBUTE: &str = "conclave.lobby";
pub const LOBBY_WAITING: &str = "waiting";
/// Longest display name a guest may type, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// How the Meeting's E2EE passphrase reaches participants: the Meeting API's field.
pub use crate::api::meeting::KeyDistribution;

/// The Meeting's E2EE settings, as the join page needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub e2ee: E2eePolicy,
    pub key_distribution: KeyDistribution,
}

/// What the page reads from a token's `metadata` claim (a JSON string, as LiveKit wants it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PageMetadata {
    pub e2ee: E2eePolicy,
    pub key_distribution: KeyDistribution,
    /// Only on guest tokens and on the access tokens they are exchanged for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<bool>,
    /// Only with `guest`: whether the guest waits for a moderator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lobby: Option<bool>,
}

/// The claims of a LiveKit token (the subset Conclave uses, in LiveKit's field names).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The API key; LiveKit looks the secret up by it.
    pub iss: String,
    /// The participant identity.
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Set to `nbf`, not to the signing time, so the token is deterministic.
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub video: VideoGrant,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// LiveKit's `video` grant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    /// Always written, so a guest token says plainly that it cannot join.
    #[serde(default)]
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// Always `false` for participants: a guest must not clear its own lobby mark or rename
    /// itself after the fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Who an access token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Participant<'a> {
    pub identity: &'a str,
    pub name: &'a str,
    pub moderator: bool,
}

/// Why a guest token cannot be exchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuestError {
    #[error("not a guest token")]
    NotAGuestToken,
    #[error("the guest token's metadata is not Conclave's: {0}")]
    Metadata(String),
    #[error("a display name is required")]
    EmptyName,
    #[error("the display name is longer than {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("the display name contains control characters")]
    NameControl,
}

fn metadata(policy: Policy, guest: Option<bool>, lobby: Option<bool>) -> String {
    let meta = PageMetadata {
        e2ee: policy.e2ee,
        key_distribution: policy.key_distribution,
        guest,
        lobby,
    };
    // A struct of enums and booleans always serialises.
    serde_json::to_string(&meta).unwrap_or_default()
}

fn member_grant(room: &str, moderator: bool) -> VideoGrant {
    VideoGrant {
        room: room.into(),
        room_join: true,
        room_admin: moderator,
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        can_update_own_metadata: Some(false),
        ..VideoGrant::default()
    }
}

/// The access token of a named participant of a Meeting.
pub fn access_claims(api_key: &str, room: &str, who: Participant<'_>, policy: Policy, window: Window) -> Claims {
    Claims {
        iss: api_key.into(),
        sub: who.identity.into(),
        name: who.name.into(),
        iat: window.not_before.timestamp(),
        nbf: window.not_before.timestamp(),
        exp: window.expires.timestamp(),
        video: member_grant(room, who.moderator),
        metadata: metadata(policy, None, None),
        attributes: BTreeMap::new(),
    }
}

/// The token of a Meeting's guest link: names the room but cannot join it.
pub fn guest_claims(api_key: &str, room: &str, policy: Policy, lobby: bool, window: Window) -> Claims {
    Claims {
        iss: api_key.into(),
        sub: GUEST_SUBJECT.into(),
        name: String::new(),
        iat: window.not_before.timestamp(),
        nbf: window.not_before.timestamp(),
        exp: window.expires.timestamp(),
        video: VideoGrant {
            room: room.into(),
            room_join: false,
            ..VideoGrant::default()
        },
        metadata: metadata(policy, Some(true), Some(lobby)),
        attributes: BTreeMap::new(),
    }
}

/// The access token a verified guest token is exchanged for: `identity` fresh for this guest,
/// `name` as the guest typed it, valid as long as the guest link. With a lobby the guest can
/// neither send nor receive anything until a moderator changes its permissions.
pub fn guest_access_claims(guest: &Claims, identity: &str, name: &str) -> Result<Claims, GuestError> {
    let meta = page_metadata(guest).map_err(|e| GuestError::Metadata(e.to_string()))?;
    if guest.sub != GUEST_SUBJECT || meta.guest != Some(true) || guest.video.room.is_empty() {
        return Err(GuestError::NotAGuestToken);
    }
    let name = display_name(name)?;
    let lobby = meta.lobby.unwrap_or(true);
    let policy = Policy {
        e2ee: meta.e2ee,
        key_distribution: meta.key_distribution,
    };
    let mut video = member_grant(&guest.video.room, false);
    let mut attributes = BTreeMap::new();
    if lobby {
        video.can_publish = Some(false);
        video.can_subscribe = Some(false);
        video.can_publish_data = Some(false);
        attributes.insert(LOBBY_ATTRIBUTE.to_owned(), LOBBY_WAITING.to_owned());
    }
    Ok(Claims {
        iss: guest.iss.clone(),
        sub: identity.into(),
        name,
        iat: guest.iat,
        nbf: guest.nbf,
        exp: guest.exp,
        video,
        metadata: metadata(policy, Some(true), Some(lobby)),
        attributes,
    })
}

/// A guest's display name, trimmed; refused when empty, too long or with control characters.
pub fn display_name(name: &str) -> Result<String, GuestError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(GuestError::EmptyName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(GuestError::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(GuestError::NameControl);
    }
    Ok(name.to_owned())
}

/// A token for LiveKit's RoomService, valid `ttl` from `now` (no participant identity).
pub fn service_claims(api_key: &str, video: VideoGrant, now: DateTime<Utc>, ttl: Duration) -> Claims {
    Claims {
        iss: api_key.into(),
        sub: String::new(),
        name: String::new(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: (now + ttl).timestamp(),
        video,
        metadata: String::new(),
        attributes: BTreeMap::new(),
    }
}

/// The E2EE settings a token carries, as the page reads them.
pub fn page_metadata(claims: &Claims) -> Result<PageMetadata, serde_json::Error> {
    serde_json::from_str(&claims.metadata)
}

/// Signs claims with the API secret: HS256, `typ: JWT`.
pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Verifies a token as LiveKit does (HS256, issuer = `api_key`, `nbf` and `exp`), without
/// leeway, and returns its claims. `conclave web` checks guest tokens with it.
pub fn verify(token: &str, api_key: &str, secret: &[u8]) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[api_key]);
    v.validate_nbf = true;
    v.validate_aud = false;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "nbf", "iss"]);
    Ok(jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)?.claims)
}

/// `len` random bytes from the operating system, base64url without padding.
fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A Meeting's E2EE passphrase: 32 random bytes, base64url, used as the passphrase string as it
/// stands (LiveKit derives the key from the string, the same way in every SDK).
pub fn new_passphrase() -> String {
    random_b64(32)
}

/// A fresh guest identity (72 random bits: two guests never collide, so never evict each other).
pub fn new_guest_identity() -> String {
    format!("{GUEST_IDENTITY_PREFIX}{}", random_b64(9))
}

/// `https://<domain>/<room>?token=<token>#key=<key>`; no fragment without a key.
pub fn join_link(domain: &str, room: &str, token: &str, key: Option<&str>) -> String {
    link(domain, room, "token", token, key)
}

/// `https://<domain>/<room>?guest=<guest token>#key=<key>`; no fragment without a key.
pub fn guest_link(domain: &str, room: &str, guest_token: &str, key: Option<&str>) -> String {
    link(domain, room, "guest", guest_token, key)
}

fn link(domain: &str, room: &str, param: &str, token: &str, key: Option<&str>) -> String {
    // JWTs and base64url keys are made of URL-safe characters; the room name may not be.
    let mut out = format!("https://{domain}/{}?{param}={token}", path_segment(room));
    if let Some(key) = key {
        out.push_str("#key=");
        out.push_str(key);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
