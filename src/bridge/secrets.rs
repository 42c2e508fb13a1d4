//! The Secret the operator generates once per Bridge. Its values are random and created in the
//! cluster, never rendered, so GitOps tools see no drift and `conclave render` shows only its name.

/// HS256 key that signs Meeting join tokens; prosody verifies with it.
pub const JWT_APP_SECRET: &str = "jwt-app-secret";
/// coturn `static-auth-secret`; prosody mints TURN credentials from it.
pub const TURN_SECRET: &str = "turn-secret";
/// XMPP password of jicofo's `focus` account.
pub const JICOFO_PASSWORD: &str = "jicofo-password";
/// XMPP password of the videobridges' `jvb` account.
pub const JVB_PASSWORD: &str = "jvb-password";

/// Every key, in a stable order.
pub const KEYS: [&str; 4] = [JWT_APP_SECRET, TURN_SECRET, JICOFO_PASSWORD, JVB_PASSWORD];

/// Suffix of the generated Secret's name.
pub const SUFFIX: &str = "secrets";

/// Bridge annotation requesting a rotation: set it to a new value (a date, a counter) and the
/// operator replaces the generated values once for that value.
pub const ROTATE_ANNOTATION: &str = "conclave.dev/rotate-secrets";
/// Bridge annotation naming which keys a rotation replaces (comma-separated); all when unset.
pub const ROTATE_KEYS_ANNOTATION: &str = "conclave.dev/rotate-keys";
/// Annotation on the generated Secret: the rotation value its contents belong to.
pub const ROTATION_ANNOTATION: &str = "conclave.dev/rotation";

/// The keys a rotation replaces: those named in `keys` (unknown names ignored), or all.
pub fn keys_to_rotate(keys: Option<&str>) -> Vec<&'static str> {
    match keys {
        None => KEYS.to_vec(),
        Some(list) => {
            let named: Vec<&str> = list.split(',').map(str::trim).collect();
            KEYS.iter().copied().filter(|k| named.contains(k)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keys() {
        assert_eq!(keys_to_rotate(None), KEYS.to_vec());
        assert_eq!(keys_to_rotate(Some("turn-secret, nope")), vec![TURN_SECRET]);
        assert!(keys_to_rotate(Some("")).is_empty());
    }
}
