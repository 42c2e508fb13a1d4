//! The Meeting reconciler's pure parts: its schedule, its join tokens, the capacity it
//! reserves on its Bridge, and the checks admission cannot make.

pub mod capacity;
pub mod credentials;
pub mod schedule;
pub mod token;
pub mod validate;

use crate::api::meeting::MeetingSpec;

/// The room name: `spec.room`, or the Meeting's name.
pub fn room(name: &str, spec: &MeetingSpec) -> String {
    spec.room.clone().unwrap_or_else(|| name.to_string())
}

/// The room's URL, without any token.
pub fn room_url(domain: &str, room: &str) -> String {
    format!("https://{domain}/{room}")
}
