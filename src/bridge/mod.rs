//! The Bridge reconciler's pure parts: inputs, generated secrets, and one builder per child kind.

pub mod build;
pub mod ca;
pub mod certificate;
pub mod context;
pub mod coturn;
pub mod jicofo;
pub mod network_policy;
pub mod prosody;
pub mod rooms;
pub mod secrets;
pub mod sfu;
pub mod web;
