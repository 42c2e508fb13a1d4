//! What every Bridge has, whatever its engine: its inputs ([`context`]), the generated secrets,
//! Conclave's CA and the certificate, TURN, the SFU pool's shape and placement, the base network
//! policies, and the Kubernetes object helpers all builders share ([`objects`]). Pure: engines
//! build on these; nothing here knows an engine.

pub mod ca;
pub mod certificate;
pub mod context;
pub mod coturn;
pub mod ingress;
pub mod network_policy;
pub mod objects;
pub mod placement;
pub mod secrets;
pub mod sfu;
