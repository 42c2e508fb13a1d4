//! Open rooms: the SFU creates none on its own (`room.auto_create: false`), so a room exists
//! only while the operator lists it. The operator renders the open rooms of a Bridge's Meetings
//! into a ConfigMap, mounted into the `conclave web` pod as a file:
//!
//! ```json
//! {"rooms": [{"name": "standup", "maxParticipants": 25}]}
//! ```
//!
//! `conclave web` re-reads the file (the kubelet refreshes a mounted ConfigMap within about a
//! minute) and makes LiveKit match it: listed rooms missing on the SFU are created with their
//! limit (`maxParticipants` 0: LiveKit's default, no limit), rooms the file no longer lists are
//! deleted, which disconnects everyone in them. An ended or deleted Meeting's links then no
//! longer join, whatever their tokens' expiry says.
//!
//! A file that cannot be read or parsed changes nothing: the last good list stays in force and
//! the error is logged, so a broken mount never closes every room.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

use super::twirp::{RoomService, TwirpError};

/// The file's format.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RoomsFile {
    rooms: Vec<RoomEntry>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoomEntry {
    name: String,
    #[serde(default)]
    max_participants: u32,
}

/// Room name → participant limit (0: none).
pub type Rooms = BTreeMap<String, u32>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomsError {
    #[error("reading {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path}: not a rooms file: {detail}")]
    Parse { path: String, detail: String },
    #[error("{path}: room {index} has an empty name")]
    EmptyName { path: String, index: usize },
    #[error("{path}: room {name:?} is listed twice")]
    Duplicate { path: String, name: String },
}

/// Parses a rooms file; `path` is only for messages.
pub fn parse(text: &str, path: &str) -> Result<Rooms, RoomsError> {
    let file: RoomsFile = serde_json::from_str(text).map_err(|e| RoomsError::Parse {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let mut rooms = Rooms::new();
    for (index, room) in file.rooms.into_iter().enumerate() {
        if room.name.is_empty() {
            return Err(RoomsError::EmptyName {
                path: path.into(),
                index,
            });
        }
        if rooms.insert(room.name.clone(), room.max_participants).is_some() {
            return Err(RoomsError::Duplicate {
                path: path.into(),
                name: room.name,
            });
        }
    }
    Ok(rooms)
}

pub fn read(path: &Path) -> Result<Rooms, RoomsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RoomsError::Read {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    parse(&text, &shown)
}

/// What to change on the SFU so that its rooms are the listed ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Missing rooms, and rooms whose limit differs (CreateRoom updates an existing room).
    pub create: Vec<(String, u32)>,
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// Pure: the changes from `actual` (on the SFU) to `desired` (in the file).
pub fn plan(desired: &Rooms, actual: &Rooms) -> Plan {
    Plan {
        create: desired
            .iter()
            .filter(|(name, max)| actual.get(*name) != Some(max))
            .map(|(name, max)| (name.clone(), *max))
            .collect(),
        delete: actual
            .keys()
            .filter(|name| !desired.contains_key(*name))
            .cloned()
            .collect(),
    }
}

/// One pass: list the SFU's rooms and apply the plan. Returns the plan applied.
pub async fn sync(service: &RoomService, desired: &Rooms) -> Result<Plan, TwirpError> {
    let actual: Rooms = service
        .list_rooms()
        .await?
        .into_iter()
        .map(|r| (r.name, r.max_participants))
        .collect();
    let plan = plan(desired, &actual);
    for (name, max) in &plan.create {
        service.create_room(name, *max).await?;
        tracing::info!(room = %name, max_participants = max, "room opened on the SFU");
    }
    for name in &plan.delete {
        match service.delete_room(name).await {
            Ok(()) => {}
            // Closed by LiveKit itself between the listing and now: the goal is reached.
            Err(e) if e.code() == Some("not_found") => {}
            Err(e) => return Err(e),
        }
        tracing::info!(room = %name, "room closed on the SFU: no longer listed");
    }
    Ok(plan)
}

/// Re-reads `path` and syncs every `interval`, until the process ends. The file is local and
/// the SFU is the Bridge's own, so this costs one file read and one ListRooms per interval;
/// rooms must be re-checked anyway, because a restarted SFU (without Redis) has forgotten them.
/// `synced` turns true after the first successful pass (readiness).
pub async fn run(path: PathBuf, service: RoomService, interval: Duration, synced: Arc<AtomicBool>) {
    let mut desired: Option<Rooms> = None;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = match read(&path) {
            Ok(rooms) => {
                desired = Some(rooms);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        let outcome = match (&desired, outcome) {
            (Some(rooms), read) => match sync(&service, rooms).await {
                // A read error with a last good list still syncs, and is still reported.
                Ok(_) => read,
                Err(e) => Err(e.to_string()),
            },
            (None, read) => read,
        };
        match outcome {
            Ok(()) => {
                synced.store(true, Ordering::Relaxed);
                if last_error.take().is_some() {
                    tracing::info!("rooms in sync with the rooms file again");
                }
            }
            Err(e) => {
                // Once per distinct error, not once per interval.
                if last_error.as_deref() != Some(&e) {
                    tracing::warn!(error = %e, "rooms not in sync; keeping the last good list");
                    last_error = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(list: &[(&str, u32)]) -> Rooms {
        list.iter().map(|(n, m)| ((*n).to_owned(), *m)).collect()
    }

    #[test]
    fn parses_the_documented_format() {
        let r = parse(
            r#"{"rooms":[{"name":"standup","maxParticipants":25},{"name":"all-hands"}]}"#,
            "f",
        )
        .expect("parse");
        assert_eq!(r, rooms(&[("standup", 25), ("all-hands", 0)]));
        assert_eq!(parse(r#"{"rooms":[]}"#, "f"), Ok(Rooms::new()));
    }

    #[test]
    fn refuses_what_could_close_rooms_by_mistake() {
        assert!(matches!(parse("", "f"), Err(RoomsError::Parse { .. })));
        assert!(
            matches!(parse("{}", "f"), Err(RoomsError::Parse { .. })),
            "rooms is required"
        );
        assert!(matches!(
            parse(r#"{"rooms":[{"name":"a","max":3}]}"#, "f"),
            Err(RoomsError::Parse { .. })
        ));
        assert_eq!(
            parse(r#"{"rooms":[{"name":""}]}"#, "f"),
            Err(RoomsError::EmptyName {
                path: "f".into(),
                index: 0
            })
        );
        assert_eq!(
            parse(r#"{"rooms":[{"name":"a"},{"name":"a","maxParticipants":2}]}"#, "f"),
            Err(RoomsError::Duplicate {
                path: "f".into(),
                name: "a".into()
            })
        );
    }

    #[test]
    fn plan_creates_missing_updates_limits_and_deletes_unlisted() {
        let desired = rooms(&[("a", 3), ("b", 0), ("c", 10)]);
        let actual = rooms(&[("a", 3), ("c", 5), ("old", 0)]);
        assert_eq!(
            plan(&desired, &actual),
            Plan {
                create: vec![("b".into(), 0), ("c".into(), 10)],
                delete: vec!["old".into()],
            }
        );
        assert!(plan(&desired, &desired).is_empty(), "converged: nothing to do");
        assert_eq!(plan(&Rooms::new(), &actual).delete, ["a", "c", "old"]);
    }
}
