//! A client for LiveKit's RoomService over Twirp's JSON protocol: `POST
//! <base>/twirp/livekit.RoomService/<Method>` with a short-lived token signed with the API
//! secret. Only the calls Conclave makes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::livekit::token::{self, VideoGrant};

/// Every call's deadline, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the token of one call.
const TOKEN_TTL: chrono::Duration = chrono::Duration::minutes(5);
/// Largest response read (a ListParticipants of a full room is a few hundred KiB).
const MAX_RESPONSE: usize = 8 << 20;

/// The API key and secret, from the Bridge's Secret. `Debug` does not show the secret.
#[derive(Clone)]
pub struct Credentials {
    pub api_key: String,
    pub api_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwirpError {
    #[error("LiveKit API URL {0:?} is not usable")]
    Url(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("signing the RoomService token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("RoomService {method}: {source}")]
    Transport {
        method: &'static str,
        source: hyper_util::client::legacy::Error,
    },
    #[error("RoomService {method}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { method: &'static str },
    #[error("RoomService {method}: reading the answer: {detail}")]
    Body { method: &'static str, detail: String },
    #[error("RoomService {method}: HTTP {status} {code}: {msg}")]
    Status {
        method: &'static str,
        status: u16,
        code: String,
        msg: String,
    },
    #[error("RoomService {method}: unexpected answer: {source}")]
    Decode {
        method: &'static str,
        source: serde_json::Error,
    },
}

impl TwirpError {
    /// Twirp's error code (`not_found`, `permission_denied`, ...), when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            TwirpError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A room as ListRooms reports it.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    #[serde(default, alias = "maxParticipants")]
    pub max_participants: u32,
    #[serde(default, alias = "numParticipants")]
    pub num_participants: u32,
}

/// A participant as ListParticipants reports it (the fields Conclave reads).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub identity: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub tracks: Vec<Track>,
    #[serde(default)]
    pub permission: Option<Permission>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub sid: String,
    /// `AUDIO` or `VIDEO`.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: String,
    /// `GCM` (or another cipher) when the publisher encrypts; `NONE` or absent when not.
    #[serde(default)]
    pub encryption: String,
}

impl Track {
    pub fn encrypted(&self) -> bool {
        !self.encryption.is_empty() && self.encryption != "NONE"
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Permission {
    #[serde(default, alias = "canSubscribe")]
    pub can_subscribe: bool,
    #[serde(default, alias = "canPublish")]
    pub can_publish: bool,
    #[serde(default, alias = "canPublishData")]
    pub can_publish_data: bool,
}

#[derive(Deserialize)]
struct TwirpErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

#[derive(Deserialize)]
struct ListRoomsResponse {
    #[serde(default)]
    rooms: Vec<Room>,
}

#[derive(Deserialize)]
struct ListParticipantsResponse {
    #[serde(default)]
    participants: Vec<Participant>,
}

/// Emptiness check for the empty responses (`{}`) of Create, Delete and the like.
#[derive(Deserialize)]
struct Ignored {}

/// Rooms Conclave creates outlive emptiness for this long; the reconciler re-creates any room
/// LiveKit closes anyway, so this only narrows the window in which a join could find it gone.
pub const ROOM_IDLE_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

pub struct RoomService {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    credentials: Credentials,
}

impl RoomService {
    /// `base`: LiveKit's HTTP URL (`http(s)://host:port`), Twirp paths are appended.
    pub fn new(base: &str, credentials: Credentials) -> Result<RoomService, TwirpError> {
        let uri: hyper::Uri = base.parse().map_err(|_| TwirpError::Url(base.into()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(TwirpError::Url(base.into()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| TwirpError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(RoomService {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        grant: VideoGrant,
        body: serde_json::Value,
    ) -> Result<T, TwirpError> {
        let claims = token::service_claims(&self.credentials.api_key, grant, Utc::now(), TOKEN_TTL);
        let bearer = token::sign(&claims, self.credentials.api_secret.as_bytes())?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/twirp/livekit.RoomService/{method}", self.base))
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| TwirpError::Url(self.base.clone()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|source| TwirpError::Transport { method, source })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| TwirpError::Body {
                    method,
                    detail: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, TwirpError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| TwirpError::Timeout { method })??;
        if !status.is_success() {
            let err: TwirpErrorBody = serde_json::from_slice(&bytes).unwrap_or(TwirpErrorBody {
                code: String::new(),
                msg: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
            return Err(TwirpError::Status {
                method,
                status: status.as_u16(),
                code: err.code,
                msg: err.msg,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| TwirpError::Decode { method, source })
    }

    fn admin_grant() -> VideoGrant {
        VideoGrant {
            room_create: true,
            room_list: true,
            ..VideoGrant::default()
        }
    }

    fn room_admin(room: &str) -> VideoGrant {
        VideoGrant {
            room: room.into(),
            room_admin: true,
            ..VideoGrant::default()
        }
    }

    pub async fn list_rooms(&self) -> Result<Vec<Room>, TwirpError> {
        let r: ListRoomsResponse = self
            .call("ListRooms", Self::admin_grant(), serde_json::json!({}))
            .await?;
        Ok(r.rooms)
    }

    /// Creates the room, or updates its limit when it exists.
    pub async fn create_room(&self, name: &str, max_participants: u32) -> Result<(), TwirpError> {
        let body = serde_json::json!({
            "name": name,
            "max_participants": max_participants,
            "empty_timeout": ROOM_IDLE_TIMEOUT_SECONDS,
            "departure_timeout": ROOM_IDLE_TIMEOUT_SECONDS,
        });
        let _: Room = self.call("CreateRoom", Self::admin_grant(), body).await?;
        Ok(())
    }

    /// Deletes the room, disconnecting everyone in it.
    pub async fn delete_room(&self, name: &str) -> Result<(), TwirpError> {
        let _: Ignored = self
            .call("DeleteRoom", Self::admin_grant(), serde_json::json!({ "room": name }))
            .await?;
        Ok(())
    }

    pub async fn list_participants(&self, room: &str) -> Result<Vec<Participant>, TwirpError> {
        let r: ListParticipantsResponse = self
            .call(
                "ListParticipants",
                Self::room_admin(room),
                serde_json::json!({ "room": room }),
            )
            .await?;
        Ok(r.participants)
    }
}
