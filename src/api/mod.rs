//! The `conclave.dev/v1alpha1` API: `Bridge` and `Meeting`.

pub mod bridge;
pub mod common;
pub mod meeting;
pub mod redis;

pub use bridge::{Bridge, BridgeSpec, BridgeStatus};
pub use common::{E2eePolicy, Exposure};
pub use meeting::{Meeting, MeetingSpec, MeetingStatus, Phase};
