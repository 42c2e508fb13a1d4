//! The Secret the operator generates once per Bridge. Its values are random and created in the
//! cluster, never rendered, so GitOps tools see no drift and `conclave render` shows only its name.
//! Which values it holds depends on the engine; TURN's secret is common to both.

use crate::api::bridge::Engine;

/// HS256 key that signs Meeting join tokens; prosody verifies with it.
pub const JWT_APP_SECRET: &str = "jwt-app-secret";
/// coturn `static-auth-secret`; prosody (Jitsi) or livekit-server (LiveKit) mints TURN
/// credentials from it.
pub const TURN_SECRET: &str = "turn-secret";
/// XMPP password of jicofo's `focus` account.
pub const JICOFO_PASSWORD: &str = "jicofo-password";
/// XMPP password of the videobridges' `jvb` account.
pub const JVB_PASSWORD: &str = "jvb-password";
/// LiveKit API key: the `iss` of every access token, naming the secret that signs it.
pub const LIVEKIT_API_KEY: &str = "livekit-api-key";
/// LiveKit API secret (HS256): signs access tokens and authenticates RoomService calls.
pub const LIVEKIT_API_SECRET: &str = "livekit-api-secret";
/// Password of the Redis the operator runs for a LiveKit Bridge.
pub const REDIS_PASSWORD: &str = "redis-password";

/// A Jitsi Bridge's keys, in a stable order.
pub const JITSI_KEYS: [&str; 4] = [JWT_APP_SECRET, TURN_SECRET, JICOFO_PASSWORD, JVB_PASSWORD];
/// A LiveKit Bridge's keys. The Redis password is generated whatever the pool's size, so a
/// pool growing past one replica needs no new value.
pub const LIVEKIT_KEYS: [&str; 4] = [LIVEKIT_API_KEY, LIVEKIT_API_SECRET, TURN_SECRET, REDIS_PASSWORD];

/// Every key of an engine's generated Secret, in a stable order.
pub fn keys(engine: Engine) -> &'static [&'static str] {
    match engine {
        Engine::Jitsi => &JITSI_KEYS,
        Engine::LiveKit => &LIVEKIT_KEYS,
    }
}

/// Suffix of the generated Secret's name.
pub const SUFFIX: &str = "secrets";

/// Bridge annotation requesting a rotation: set it to a new value (a date, a counter) and the
/// operator replaces the generated values once for that value.
pub const ROTATE_ANNOTATION: &str = "conclave.dev/rotate-secrets";
/// Bridge annotation naming which keys a rotation replaces (comma-separated); all when unset.
pub const ROTATE_KEYS_ANNOTATION: &str = "conclave.dev/rotate-keys";
/// Annotation on the generated Secret: the rotation value its contents belong to.
pub const ROTATION_ANNOTATION: &str = "conclave.dev/rotation";

/// The keys a rotation replaces: those of the engine named in `keys` (unknown names ignored),
/// or all.
pub fn keys_to_rotate(engine: Engine, keys: Option<&str>) -> Vec<&'static str> {
    let all = self::keys(engine);
    match keys {
        None => all.to_vec(),
        Some(list) => {
            let named: Vec<&str> = list.split(',').map(str::trim).collect();
            all.iter().copied().filter(|k| named.contains(k)).collect()
        }
    }
}

/// A fresh value for `key`: 32 random bytes in URL-safe base64 (fits every component's config
/// syntax, and LiveKit's 32-character minimum), except the LiveKit API key, which is an
/// identifier shown in logs and tokens, not a secret: `API` and 12 random characters, so it
/// is always a YAML string in `LIVEKIT_KEYS`.
pub fn generate(key: &str) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    if key == LIVEKIT_API_KEY {
        let alnum: String = value.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
        format!("API{alnum}")
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keys() {
        assert_eq!(keys_to_rotate(Engine::Jitsi, None), JITSI_KEYS.to_vec());
        assert_eq!(
            keys_to_rotate(Engine::Jitsi, Some("turn-secret, nope")),
            vec![TURN_SECRET]
        );
        assert!(keys_to_rotate(Engine::Jitsi, Some("")).is_empty());
        assert_eq!(
            keys_to_rotate(Engine::LiveKit, Some("livekit-api-secret,jvb-password")),
            vec![LIVEKIT_API_SECRET],
            "a key of the other engine is not this Bridge's"
        );
    }

    #[test]
    fn generated_values_fit_their_use() {
        let secret = generate(LIVEKIT_API_SECRET);
        assert!(secret.len() >= 32, "LiveKit refuses shorter secrets: {}", secret.len());
        assert_ne!(secret, generate(LIVEKIT_API_SECRET));
        let key = generate(LIVEKIT_API_KEY);
        assert!(key.starts_with("API") && key.len() == 15, "{key}");
        assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
    }
}
