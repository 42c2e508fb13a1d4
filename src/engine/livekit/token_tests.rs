use super::*;
use chrono::{Duration, Utc};
use serde_json::{Value, json};

const KEY: &str = "APIconclave";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn window() -> Window {
    let now = Utc::now();
    Window {
        not_before: now - Duration::minutes(1),
        expires: now + Duration::hours(1),
    }
}

fn required() -> Policy {
    Policy {
        e2ee: E2eePolicy::Required,
        key_distribution: KeyDistribution::Link,
    }
}

fn alice(moderator: bool) -> Participant<'static> {
    Participant {
        identity: "alice",
        name: "Alice Example",
        moderator,
    }
}

/// The payload as LiveKit and the page see it.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[test]
fn access_token_has_livekit_claims_and_verifies() {
    let w = window();
    let token = sign(&access_claims(KEY, "standup", alice(true), required(), w), SECRET).expect("sign");
    let body = payload(&token);
    assert_eq!(body["iss"], KEY);
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["name"], "Alice Example");
    assert_eq!(body["nbf"], w.not_before.timestamp());
    assert_eq!(body["iat"], w.not_before.timestamp());
    assert_eq!(body["exp"], w.expires.timestamp());
    assert_eq!(
        body["video"],
        json!({
            "room": "standup", "roomJoin": true, "roomAdmin": true, "canPublish": true,
            "canSubscribe": true, "canPublishData": true, "canUpdateOwnMetadata": false,
        })
    );
    let meta: Value = serde_json::from_str(body["metadata"].as_str().expect("metadata is a string")).expect("json");
    assert_eq!(meta, json!({"e2ee": "Required", "keyDistribution": "Link"}));
    assert!(body.get("attributes").is_none());
    assert!(body.get("jti").is_none(), "no random id: tokens must be deterministic");

    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));

    let claims = verify(&token, KEY, SECRET).expect("verify");
    assert_eq!(claims.video.room, "standup");
    assert!(verify(&token, KEY, b"another secret of thirty-two chars").is_err());
    assert!(
        verify(&token, "APIother", SECRET).is_err(),
        "issuer must be the API key"
    );
}

#[test]
fn members_are_not_admins_and_tokens_are_deterministic() {
    let w = window();
    let c = access_claims(KEY, "standup", alice(false), required(), w);
    assert!(!c.video.room_admin);
    assert!(
        payload(&sign(&c, SECRET).expect("sign"))["video"]
            .get("roomAdmin")
            .is_none()
    );
    assert_eq!(sign(&c, SECRET).expect("sign"), sign(&c, SECRET).expect("sign"));
}

#[test]
fn out_of_band_and_preferred_reach_the_metadata() {
    let policy = Policy {
        e2ee: E2eePolicy::Preferred,
        key_distribution: KeyDistribution::OutOfBand,
    };
    let c = access_claims(KEY, "r", alice(false), policy, window());
    assert_eq!(
        page_metadata(&c).expect("metadata"),
        PageMetadata {
            e2ee: E2eePolicy::Preferred,
            key_distribution: KeyDistribution::OutOfBand,
            guest: None,
            lobby: None,
        }
    );
}

#[test]
fn guest_token_cannot_join_and_says_so() {
    let token = sign(&guest_claims(KEY, "standup", required(), true, window()), SECRET).expect("sign");
    let body = payload(&token);
    assert_eq!(body["sub"], GUEST_SUBJECT);
    assert_eq!(body["video"], json!({"room": "standup", "roomJoin": false}));
    let meta: Value = serde_json::from_str(body["metadata"].as_str().expect("string")).expect("json");
    assert_eq!(
        meta,
        json!({"e2ee": "Required", "keyDistribution": "Link", "guest": true, "lobby": true})
    );
}

#[test]
fn guest_with_lobby_gets_no_media_and_a_waiting_mark() {
    let w = window();
    let guest = guest_claims(KEY, "standup", required(), true, w);
    let c = guest_access_claims(&guest, "guest-abc", "  Gina  ").expect("exchange");
    assert_eq!(c.sub, "guest-abc");
    assert_eq!(c.name, "Gina");
    assert_eq!((c.nbf, c.exp), (w.not_before.timestamp(), w.expires.timestamp()));
    assert!(c.video.room_join && !c.video.room_admin);
    assert_eq!(c.video.room, "standup");
    assert_eq!(
        (c.video.can_publish, c.video.can_subscribe, c.video.can_publish_data),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(c.video.can_update_own_metadata, Some(false));
    assert_eq!(
        c.attributes.get(LOBBY_ATTRIBUTE).map(String::as_str),
        Some(LOBBY_WAITING)
    );
    assert_eq!(page_metadata(&c).expect("meta").lobby, Some(true));
}

#[test]
fn guest_without_lobby_gets_member_grants() {
    let guest = guest_claims(KEY, "standup", required(), false, window());
    let c = guest_access_claims(&guest, "guest-abc", "Gina").expect("exchange");
    assert_eq!(c.video, member_grant("standup", false));
    assert!(c.attributes.is_empty());
}

#[test]
fn only_guest_tokens_are_exchanged_and_names_are_checked() {
    let w = window();
    let member = access_claims(KEY, "standup", alice(true), required(), w);
    assert_eq!(
        guest_access_claims(&member, "guest-x", "Gina"),
        Err(GuestError::NotAGuestToken)
    );
    let mut named_guest = member.clone();
    named_guest.sub = GUEST_SUBJECT.into();
    assert_eq!(
        guest_access_claims(&named_guest, "guest-x", "Gina"),
        Err(GuestError::NotAGuestToken),
        "sub alone does not make a guest token"
    );
    let guest = guest_claims(KEY, "standup", required(), true, w);
    assert_eq!(
        guest_access_claims(&guest, "guest-x", " \t"),
        Err(GuestError::EmptyName)
    );
    assert_eq!(
        guest_access_claims(&guest, "guest-x", &"x".repeat(MAX_NAME_CHARS + 1)),
        Err(GuestError::NameTooLong)
    );
    assert!(guest_access_claims(&guest, "guest-x", &"é".repeat(MAX_NAME_CHARS)).is_ok());
    assert_eq!(
        guest_access_claims(&guest, "guest-x", "Gi\u{7}na"),
        Err(GuestError::NameControl)
    );
    let mut broken = guest.clone();
    broken.metadata = "{".into();
    assert!(matches!(
        guest_access_claims(&broken, "guest-x", "Gina"),
        Err(GuestError::Metadata(_))
    ));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let now = Utc::now();
    for w in [
        Window {
            not_before: now - Duration::hours(2),
            expires: now - Duration::seconds(1),
        },
        Window {
            not_before: now + Duration::seconds(30),
            expires: now + Duration::hours(2),
        },
    ] {
        let token = sign(&guest_claims(KEY, "r", required(), true, w), SECRET).expect("sign");
        assert!(verify(&token, KEY, SECRET).is_err());
    }
}

#[test]
fn service_tokens_have_no_identity_and_expire() {
    let now = Utc::now();
    let grant = VideoGrant {
        room_create: true,
        room_list: true,
        ..VideoGrant::default()
    };
    let c = service_claims(KEY, grant, now, Duration::minutes(5));
    let body = payload(&sign(&c, SECRET).expect("sign"));
    assert_eq!(body["sub"], "");
    assert_eq!(
        body["video"],
        json!({"roomJoin": false, "roomCreate": true, "roomList": true})
    );
    assert_eq!(c.exp - c.nbf, 300);
}

#[test]
fn links_carry_the_key_only_in_the_fragment() {
    let key = new_passphrase();
    assert_eq!(key.len(), 43, "32 bytes in unpadded base64url");
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(key, new_passphrase());
    assert_eq!(
        join_link("meet.example.com", "standup", "a.b.c", Some(&key)),
        format!("https://meet.example.com/standup?token=a.b.c#key={key}")
    );
    assert_eq!(
        join_link("meet.example.com", "standup", "a.b.c", None),
        "https://meet.example.com/standup?token=a.b.c"
    );
    assert_eq!(
        guest_link("meet.example.com", "team room/ä", "g.h.i", Some("k")),
        "https://meet.example.com/team%20room%2F%C3%A4?guest=g.h.i#key=k"
    );
}

#[test]
fn guest_identities_are_fresh() {
    let a = new_guest_identity();
    assert!(a.starts_with(GUEST_IDENTITY_PREFIX));
    assert_eq!(a.len(), GUEST_IDENTITY_PREFIX.len() + 12);
    assert_ne!(a, new_guest_identity());
}
