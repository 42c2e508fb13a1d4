//! The LiveKit engine.

pub mod token;
