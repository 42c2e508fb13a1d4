//! Engine-specific builders: what a Bridge becomes for each conferencing engine.

pub mod livekit;
