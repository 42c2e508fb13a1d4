//! The operator process: the controllers, what they share, and how they run.

pub mod bridge;
mod context;
mod events;
pub mod leader;
pub mod meeting;
pub mod status;
mod tls;
mod watch;

use std::sync::Arc;

use kube::Client;
use kube::runtime::controller::Action;
use tokio::sync::watch as signal;

pub use context::{Context, Kind, put_secret, put_secret_at, secret_value};

use crate::clock::Clock;
use crate::conditions::Reason;
use crate::http::Health;
use crate::metrics::Metrics;

/// Why a reconcile failed. Each variant is a reason a human can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("building desired objects failed: {0}")]
    Build(String),
    #[error("applying {0} failed: {1}")]
    Apply(String, #[source] kube::Error),
    #[error("reading {0} failed: {1}")]
    Read(String, #[source] kube::Error),
    #[error("{0} changed since it was cached; retrying with the fresh version")]
    Stale(String),
    #[error("certificate authority: {0}")]
    Ca(#[from] crate::bridge::ca::CaError),
}

impl Error {
    /// The error's kind as a condition reason, for status, metrics and Events.
    pub fn reason(&self) -> Reason {
        match self {
            Error::MissingField(_) => Reason::MissingField,
            Error::Build(_) => Reason::BuildFailed,
            Error::Apply(..) => Reason::ApplyFailed,
            Error::Read(..) => Reason::ReadFailed,
            Error::Stale(_) => Reason::StaleCache,
            Error::Ca(_) => Reason::CaFailed,
        }
    }
}

/// Requeue after a failed reconcile: at once (almost) when only the cache was stale, after a
/// back-off otherwise, so a broken API server is not hammered.
pub fn retry_after(err: &Error) -> Action {
    tracing::warn!(error = %err, reason = %err.reason(), "reconcile failed");
    match err {
        Error::Stale(_) => Action::requeue(std::time::Duration::from_secs(1)),
        _ => Action::requeue(std::time::Duration::from_secs(5)),
    }
}

/// How the operator runs: what it watches, whether it contends for a Lease, its clock.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only this namespace (`None`: all).
    pub watch_namespace: Option<String>,
    /// Contend for this Lease and reconcile only while holding it.
    pub lease: Option<leader::LeaseConfig>,
    pub clock: Clock,
}

/// Why the operator stopped other than by a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
}

/// Resolves once a shutdown was requested.
pub async fn requested(mut shutdown: signal::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the operator until `shutdown` turns true (or, with a Lease, until it is lost).
///
/// With leader election a standby reports ready at once: it has nothing to serve, and a
/// standby that stayed unready would stall every rolling update of the Deployment. The leader
/// starts its caches and controllers only once it holds the Lease; the caches of a small
/// cluster list in well under a second, far inside the takeover bounds.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: signal::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(config) = options.lease.clone() else {
        metrics.set_leader(true);
        watch::lead(client, &options, metrics, health, shutdown).await;
        return Ok(());
    };
    health.set_ready(true);
    let mut elector = leader::Elector::new(client.clone(), config).await?;
    tracing::info!(identity = %elector.identity(), "contending for leadership");
    let acquired = tokio::select! {
        _ = requested(shutdown.clone()) => false,
        () = elector.acquire() => true,
    };
    if !acquired {
        return Ok(());
    }
    tracing::info!("acquired the lease; leading");
    metrics.set_leader(true);
    let lost = tokio::select! {
        () = watch::lead(client, &options, metrics.clone(), health, shutdown) => None,
        lost = elector.hold() => Some(lost),
    };
    metrics.set_leader(false);
    if let Some(lost) = lost {
        return Err(lost.into());
    }
    elector.release().await?;
    tracing::info!("released the lease");
    Ok(())
}
