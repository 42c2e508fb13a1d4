//! LiveKit access tokens: HS256 JWTs signed with an API secret, `iss` the API key, `sub` the
//! participant's identity, and a `video` grant naming one room. The operator will mint these
//! for Meetings; until then the tests mint their own here.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    nbf: i64,
    exp: i64,
    video: VideoGrant<'a>,
    #[serde(rename = "roomConfig", skip_serializing_if = "Option::is_none")]
    room_config: Option<RoomConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    room: &'a str,
    room_join: bool,
    can_publish: bool,
    can_subscribe: bool,
    can_publish_data: bool,
}

/// The room's configuration, applied when this token's join creates the room.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomConfig {
    max_participants: u32,
}

/// A participant's token.
pub struct Grant<'a> {
    pub identity: &'a str,
    pub name: &'a str,
    pub room: &'a str,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub expires: i64,
    /// Set as the room's limit if this join creates the room.
    pub max_participants: Option<u32>,
}

impl Grant<'_> {
    pub fn sign(&self, api_key: &str, api_secret: &str) -> String {
        let claims = Claims {
            iss: api_key,
            sub: self.identity,
            name: self.name,
            nbf: self.not_before,
            exp: self.expires,
            video: VideoGrant {
                room: self.room,
                room_join: true,
                can_publish: true,
                can_subscribe: true,
                can_publish_data: true,
            },
            room_config: self
                .max_participants
                .map(|max_participants| RoomConfig { max_participants }),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(api_secret.as_bytes()),
        )
        .expect("sign a LiveKit token")
    }
}
