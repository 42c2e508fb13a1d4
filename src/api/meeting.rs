//! The `Meeting` API: a room on a Bridge with its people, its time and its policy.

use crate::conditions::Condition;
use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::E2eePolicy;

/// A room on a Bridge: schedule, participants with personal join links, E2EE policy, and the
/// capacity the Bridge reserves ahead of the start.
// The printcolumn arguments repeat `type_ = ...` by design; clippy reads them as attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "conclave.dev",
    version = "v1alpha1",
    kind = "Meeting",
    doc = "A room on a Bridge with its participants, schedule and E2EE policy.",
    namespaced,
    status = "MeetingStatus",
    shortname = "mtg",
    category = "conclave",
    derive = "PartialEq",
    validation = Rule::new("has(self.spec.room) || self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name contains '.', which room names may not: set spec.room").field_path(".spec.room"),
    validation = Rule::new("has(self.spec.room) || size(self.metadata.name) <= 63").message("metadata.name is longer than the 63 characters a room name may have: set spec.room").field_path(".spec.room"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Bridge", type_ = "string", json_path = ".spec.bridge"),
    printcolumn(name = "Start", type_ = "string", json_path = ".spec.start"),
    printcolumn(name = "End", type_ = "string", json_path = ".spec.end"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.start) || !has(self.end) || self.end > self.start").message("spec.end must be after spec.start").field_path(".end"))]
#[x_kube(validation = Rule::new("!has(self.maxParticipants) || !has(self.participants) || size(self.participants) <= self.maxParticipants").message("spec.maxParticipants is smaller than the number of spec.participants").field_path(".maxParticipants"))]
#[x_kube(validation = Rule::new("!has(self.guests) || !self.guests.allowed || !has(self.participants) || !self.participants.exists(p, p.name == 'guest')").message("spec.participants: the name 'guest' is the key of the guest link; rename the participant or disallow guests").field_path(".participants"))]
pub struct MeetingSpec {
    /// Name of the Bridge, in the same namespace, that hosts the room. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.bridge is immutable; create a new Meeting on the other Bridge"))]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub bridge: String,

    /// Room name in the URL (`https://<domain>/<room>`). Lowercase letters, digits and '-'.
    /// Defaults to the Meeting's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub room: Option<String>,

    /// When the meeting starts (RFC 3339). Unset: open as soon as the Bridge is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,

    /// When the meeting ends (RFC 3339). Unset: a standing room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,

    /// The people invited; each gets a personal join link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub participants: Vec<Participant>,

    /// Whether people without a personal link may join.
    #[serde(default)]
    pub guests: Guests,

    /// Most people in the room at once, enforced by the engine. Also what the Bridge reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_participants: Option<i32>,

    /// E2EE policy of the room; defaults to the Bridge's and may not be weaker than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<E2eePolicy>,

    /// How participants get the room's end-to-end encryption passphrase (LiveKit Bridges only).
    /// `Link` (default): the operator generates it once and puts it in every link's fragment
    /// (`#key=`), which browsers never send to a server. `OutOfBand`: links carry no key, the
    /// organiser shares a passphrase by other means and the join page asks for it; nobody in
    /// the cluster ever holds it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub key_distribution: KeyDistribution,
}

/// How a Meeting's E2EE passphrase reaches its participants.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyDistribution {
    /// In each join link's fragment.
    #[default]
    Link,
    /// Not in the links: shared by the organiser by other means.
    OutOfBand,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An invited participant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Identifier, unique in the Meeting; the key of this person's link in the credentials
    /// Secret. Letters, digits, '-', '_' and '.'.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$")
    )]
    pub name: String,
    /// Name shown in the conference; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub display_name: Option<String>,
    /// Email address, carried in the token for avatars and invitations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: Option<String>,
    /// Moderators can mute, remove and admit people from the lobby.
    #[serde(default)]
    pub moderator: bool,
}

/// Access for people without a personal link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guests {
    /// Issue a shared guest link.
    #[serde(default)]
    pub allowed: bool,
    /// Guests wait in the lobby until a moderator admits them.
    #[serde(default = "yes")]
    pub lobby: bool,
}

impl Default for Guests {
    fn default() -> Self {
        Guests {
            allowed: false,
            lobby: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Where a Meeting is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for its Bridge to exist and be ready.
    Pending,
    /// Ready, before the join window opens.
    Scheduled,
    /// Join links work.
    Open,
    /// Past its end; links are gone.
    Ended,
    /// The spec cannot be honoured; see the conditions.
    Invalid,
}

/// Observed state of a Meeting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeetingStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Room URL, without any token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Secret holding one join link per participant (and `guest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// When the issued links' tokens are valid. Also how a credentials Secret deleted by hand
    /// comes back with the same links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkValidity>,
    /// `Ready`, `CapacityReserved`, `E2EEAvailable` (E2EE `Required` only) and others, with
    /// reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The validity of a Meeting's join tokens (whole seconds, as in the tokens).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkValidity {
    /// The tokens' `nbf`.
    pub valid_from: DateTime<Utc>,
    /// The tokens' `exp`.
    pub valid_until: DateTime<Utc>,
}
