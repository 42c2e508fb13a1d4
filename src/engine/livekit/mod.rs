//! The LiveKit engine: livekit-server as the SFU pool, Redis when the pool can hold more than
//! one replica, and Conclave's own join page (`conclave web`), which turns end-to-end
//! encryption on before the first frame.

pub mod config;
pub mod links;
pub mod network_policy;
pub mod redis;
pub mod rooms;
pub mod sfu;
pub mod token;
pub mod web;

use crate::api::BridgeSpec;
use crate::bridge::context::Ctx;
use crate::child::Child;

/// The LiveKit children of a Bridge, in a stable order: the open rooms, Redis, the page and
/// signalling, then the SFU pool.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = Vec::new();
    out.extend(rooms::build(ctx)?);
    out.extend(redis::build(ctx)?);
    out.extend(web::build(ctx)?);
    out.extend(sfu::build(ctx)?);
    Ok(out)
}

/// The Deployments that must be ready for the Bridge to serve: the page, and the operator's
/// Redis when it runs one. With a description for the condition message.
pub fn signalling(spec: &BridgeSpec) -> (Vec<&'static str>, &'static str) {
    match redis::mode(spec) {
        redis::Redis::Operator => (vec!["web", redis::SUFFIX], "the join page (web) and Redis"),
        _ => (vec!["web"], "the join page (web)"),
    }
}
