//! The operator process: the controllers, what they share, and how they run.

pub mod bridge;
pub mod certmanager;
mod context;
mod events;
pub mod leader;
pub mod meeting;
mod sfu_pods;
pub mod status;
mod tls;
mod watch;

use std::sync::Arc;

use kube::Client;
use kube::runtime::controller::Action;
use tokio::sync::watch as signal;

pub use context::{Context, Kind, put_secret, secret_keys, secret_value};
pub use watch::{InitialList, PROBE_SELECTOR};

use crate::clock::Clock;
use crate::conditions::Reason;
use crate::http::Health;
use crate::metrics::Metrics;

/// Why a reconcile failed. Each variant is a reason a human can act on; the reconcilers write
/// it into status as a `Reconciled=False` condition (see [`Error::reason`]).
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
    /// An object Conclave does not control holds the name of one of its children.
    #[error("{key} already exists and is not Conclave's ({holder}); rename or delete it")]
    Conflict { key: String, holder: String },
}

impl Error {
    /// The error's kind as a condition reason, for status, metrics and Events.
    pub fn reason(&self) -> Reason {
        match self {
            Error::MissingField(_) => Reason::MissingField,
            Error::Build(_) => Reason::BuildFailed,
            Error::Apply(_, e) => refusal(e).unwrap_or(Reason::ApplyFailed),
            Error::Read(_, e) => match refusal(e) {
                Some(Reason::Forbidden) => Reason::Forbidden,
                _ => Reason::ReadFailed,
            },
            Error::Stale(_) => Reason::StaleCache,
            Error::Ca(_) => Reason::CaFailed,
            Error::Conflict { .. } => Reason::ChildConflict,
        }
    }

    /// Whether the failure says nothing about the object itself: the API server was briefly
    /// unreachable or busy, or the cache was behind. Such a failure leaves `Ready` alone; any
    /// other means the object is not (or may no longer be) what its spec says.
    pub fn is_transient(&self) -> bool {
        let passing = |e: &kube::Error| match e {
            kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 409,
            _ => true,
        };
        match self {
            Error::Stale(_) => true,
            Error::Apply(_, e) | Error::Read(_, e) => passing(e),
            _ => false,
        }
    }
}

impl Error {
    /// A failed apply of the child `key`.
    pub fn applying(key: String, e: crate::apply::ApplyError) -> Error {
        match e {
            crate::apply::ApplyError::Foreign { key, holder } => Error::Conflict { key, holder },
            crate::apply::ApplyError::Api(e) => Error::Apply(key, e),
        }
    }
}

/// The reason for an API server's refusal of a write that a human has to resolve in the
/// cluster (a quota, RBAC, an admission policy, a port someone else holds); `None` for other
/// failures (unreachable, overloaded, conflicts), which are retried.
pub fn refusal(e: &kube::Error) -> Option<Reason> {
    let kube::Error::Api(s) = e else {
        return None;
    };
    match s.code {
        403 if s.message.contains("exceeded quota") => Some(Reason::QuotaExceeded),
        403 => Some(Reason::Forbidden),
        422 if s.message.contains("already allocated") => Some(Reason::PortInUse),
        400 | 422 => Some(Reason::ChildRefused),
        _ => None,
    }
}

/// Requeue after a failed reconcile: at once (almost) when only the cache was stale, after a
/// back-off otherwise, so a broken API server is not hammered.
pub fn retry_after(err: &Error) -> Action {
    Action::requeue(retry_delay(err))
}

/// How long a failed reconcile waits before its retry (see [`retry_after`]); logs the failure.
pub fn retry_delay(err: &Error) -> std::time::Duration {
    tracing::warn!(error = %err, reason = %err.reason(), "reconcile failed");
    match err {
        Error::Stale(_) => std::time::Duration::from_secs(1),
        _ => std::time::Duration::from_secs(5),
    }
}

/// How the operator runs: what it watches, whether it contends for a Lease, its clock.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only this namespace (`None`: all).
    pub watch_namespace: Option<String>,
    /// Contend for this Lease and reconcile only while holding it.
    pub lease: Option<leader::LeaseConfig>,
    /// The cluster the Bridges run in (DNS domain, IPv6).
    pub cluster: crate::bridge::context::Cluster,
    pub clock: Clock,
    /// How the watches get the objects that exist when they start.
    pub initial_list: watch::InitialList,
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
        lead(client, &options, metrics, health, shutdown).await;
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
        () = lead(client, &options, metrics.clone(), health, shutdown) => None,
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

/// Runs the controllers until `shutdown`. Which kinds they watch depends on whether
/// cert-manager is installed, so when its Certificate CRD appears or goes they stop (letting
/// the reconciles in flight finish) and start again with fresh caches.
async fn lead(
    client: Client,
    options: &Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: signal::Receiver<bool>,
) {
    use certmanager::Presence;
    let (tx, mut presence) = signal::channel(Presence::Unknown);
    let follower = tokio::spawn(certmanager::follow(client.clone(), tx));
    loop {
        let known = tokio::select! {
            _ = requested(shutdown.clone()) => break,
            p = presence.wait_for(|p| *p != Presence::Unknown) => p.map(|p| *p).unwrap_or(Presence::Unwatchable),
        };
        let cert_manager = match known {
            Presence::Known(present) => present,
            _ => certmanager::discovered(&client, "cert-manager.io/v1", "Certificate").await,
        };
        let (stop, stopped) = signal::channel(false);
        let mut changed = presence.clone();
        let relay = {
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    _ = requested(shutdown) => {}
                    _ = changed.wait_for(|p| matches!(p, Presence::Known(now) if *now != cert_manager)) => {
                        tracing::info!(cert_manager = !cert_manager, "cert-manager's CRD changed; restarting the controllers");
                    }
                }
                let _ = stop.send(true);
            }
        };
        let run = watch::lead(
            client.clone(),
            options,
            cert_manager,
            metrics.clone(),
            health.clone(),
            stopped,
        );
        futures::join!(run, relay);
        if *shutdown.borrow() {
            break;
        }
    }
    follower.abort();
}
