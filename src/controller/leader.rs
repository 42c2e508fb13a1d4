//! Leader election over a `coordination.k8s.io` Lease with kube-lease-manager: one replica runs
//! the controllers, the others keep warm caches and wait.
//!
//! kube-lease-manager renews and takes over expired leases, but a standby only looks at the
//! Lease again when the lease it last saw expires. A watch on the one Lease fills both gaps:
//! a standby retries at once when the holder releases the lease (fast handover on a graceful
//! stop), and the leader checks what the API server really holds, so it steps down before its
//! lease can expire even when a renewal hangs or the Lease was taken or cleared behind its back.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a lease stays valid after its last renewal. A standby takes over at most this long
/// after the leader's last renewal, plus up to 1 s of jitter the lease manager adds, so 10 s
/// keeps takeover after a crash within the 15 s the operator promises.
pub const LEASE_DURATION_SECONDS: u64 = 10;
/// The leader renews this long before the lease expires (so about every 7 s); it is also the
/// clock skew between nodes the lease tolerates.
pub const LEASE_GRACE_SECONDS: u64 = 3;
/// The leader steps down when the API server's copy of its lease has less left than this: a
/// renewal that has not landed by then probably will not before a standby may take over.
const STEP_DOWN_MARGIN: Duration = Duration::from_secs(1);
/// How long a fresh leader waits for its own watch to show it as the holder before trusting
/// only what the watch says.
const WATCH_CATCH_UP: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_secs(1);

/// Which Lease to contend for, and as whom.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique among the replicas: the Pod name in a cluster.
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0}: {1}")]
    Manager(String, #[source] LeaseManagerError),
    #[error("lost lease {0}: {1}")]
    Lost(String, String),
}

/// The Lease as the API server last showed it.
#[derive(Clone, Debug, Default)]
struct Seen {
    holder: Option<String>,
    /// When the lease expires, by the clock of the holder that renewed it.
    expires: Option<SystemTime>,
}

impl Seen {
    fn of(lease: &Lease) -> Seen {
        let spec = lease.spec.clone().unwrap_or_default();
        let expires = match (spec.renew_time, spec.lease_duration_seconds) {
            (Some(renew), Some(secs)) => {
                SystemTime::from(renew.0).checked_add(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
            }
            _ => None,
        };
        Seen {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            expires,
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    client: Client,
    config: LeaseConfig,
    manager: LeaseManager,
    seen: watch::Receiver<Seen>,
    watch_task: JoinHandle<()>,
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl Elector {
    /// Creates the Lease if it does not exist yet and starts watching it.
    pub async fn new(client: Client, config: LeaseConfig) -> Result<Elector, LeaseError> {
        let manager = new_manager(&client, &config).await?;
        let (tx, seen) = watch::channel(Seen::default());
        let watch_task = tokio::spawn(watch_lease(client.clone(), config.clone(), tx));
        Ok(Elector {
            client,
            config,
            manager,
            seen,
            watch_task,
        })
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Waits until this replica holds the lease. API errors are logged and retried: a standby
    /// stays a standby until it can lead.
    pub async fn acquire(&mut self) {
        // Without the watch (its task ended), expiry-driven retries still work, only slower.
        let mut watching = true;
        loop {
            let changed = if watching {
                tokio::select! {
                    changed = self.manager.changed() => Some(changed),
                    seen = self.seen.changed() => {
                        watching = seen.is_ok();
                        None
                    }
                }
            } else {
                Some(self.manager.changed().await)
            };
            match changed {
                Some(Ok(true)) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                    return;
                }
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "contending for the lease failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    self.restart().await;
                }
                None => {
                    let released = self.seen.borrow_and_update().holder.is_none();
                    if released {
                        tracing::debug!("the lease was released; trying to take it");
                        self.restart().await;
                    }
                }
            }
        }
    }

    /// Keeps renewing the lease. Returns only when it is lost (taken, cleared, or not renewed in
    /// time), and then the caller must stop acting as leader at once.
    pub async fn hold(&mut self) -> LeaseError {
        let since = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let changed = self.manager.changed();
            tokio::pin!(changed);
            // The renewal future is kept across ticks: dropping it mid-request could starve the
            // renewal on a slow API server.
            let changed = loop {
                tokio::select! {
                    changed = &mut changed => break changed,
                    _ = tick.tick() => {
                        if let Err(why) = self.check(since) {
                            return LeaseError::Lost(self.config.name.clone(), why);
                        }
                    }
                }
            };
            match changed {
                Ok(true) => {}
                Ok(false) => {
                    return LeaseError::Lost(self.config.name.clone(), "another replica holds it".into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Whether the API server's copy of the lease still names this replica with time left.
    fn check(&self, since: Instant) -> Result<(), String> {
        let seen = self.seen.borrow().clone();
        match seen.holder {
            Some(h) if h == self.config.identity => match seen.expires {
                Some(t) if SystemTime::now() + STEP_DOWN_MARGIN < t => Ok(()),
                _ => Err("not renewed before it expires".into()),
            },
            _ if since.elapsed() < WATCH_CATCH_UP => Ok(()),
            Some(h) => Err(format!("now held by {h}")),
            None => Err("the Lease no longer names a holder".into()),
        }
    }

    /// Gives the lease up so a standby takes over without waiting for it to expire.
    pub async fn release(&self) -> Result<(), LeaseError> {
        self.manager
            .release()
            .await
            .map_err(|e| LeaseError::Manager(self.config.name.clone(), e))?;
        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "released the lease");
        Ok(())
    }

    /// A fresh manager: the only way to make kube-lease-manager re-read a lease it believes
    /// is held by someone else before that lease expires.
    async fn restart(&mut self) {
        loop {
            match new_manager(&self.client, &self.config).await {
                Ok(m) => {
                    self.manager = m;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the lease failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

async fn new_manager(client: &Client, config: &LeaseConfig) -> Result<LeaseManager, LeaseError> {
    let params = LeaseParams::new(config.identity.clone(), LEASE_DURATION_SECONDS, LEASE_GRACE_SECONDS)
        .with_field_manager(format!("conclave-lease-{}", config.identity));
    LeaseManager::new(
        client.clone(),
        &config.name,
        &config.namespace,
        params,
        LeaseCreateMode::AutoCreate,
    )
    .await
    .map_err(|e| LeaseError::Manager(config.name.clone(), e))
}

/// Publishes every change of the one Lease. A relist that no longer finds it counts as a
/// release, as a delete event does.
async fn watch_lease(client: Client, config: LeaseConfig, tx: watch::Sender<Seen>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let selector = watcher::Config::default().fields(&format!("metadata.name={}", config.name));
    let mut events = watcher(api, selector).default_backoff().boxed();
    let (mut listed, mut announced) = (false, false);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(lease)) => {
                tx.send_replace(Seen::of(&lease));
            }
            Ok(watcher::Event::InitApply(lease)) => {
                listed = true;
                tx.send_replace(Seen::of(&lease));
            }
            Ok(watcher::Event::Delete(_)) => {
                tx.send_replace(Seen::default());
            }
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    tx.send_replace(Seen::default());
                }
                if !announced {
                    tracing::info!(
                        lease = %format!("{}/{}", config.namespace, config.name),
                        identity = %config.identity,
                        "watching lease"
                    );
                    announced = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the lease failed; retrying"),
        }
    }
}
