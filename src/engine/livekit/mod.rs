//! The LiveKit engine: livekit-server as the SFU pool, Redis when the pool has more than one
//! replica, and Conclave's own join page.

pub mod token;
