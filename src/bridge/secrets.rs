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
