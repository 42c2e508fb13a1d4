//! The harness of the Jitsi contract test (see `tests/jitsi_contract.rs`).

pub mod cases;
pub mod check_media;
pub mod check_prosody;
pub mod check_web;
pub mod checks;
pub mod container;
pub mod dns;
pub mod env_readers;
pub mod http;
pub mod observe;
pub mod operator;
pub mod seccomp;
pub mod tools;
pub mod web;
