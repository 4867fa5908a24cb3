//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the leader patches.
//!
//! The shared flag is what every reconcile checks before it writes. It is cleared the moment the lease manager
//! reports the lease lost, so a deposed replica stops patching at once; a standby that acquires the lease sets
//! it, and the reconcile loop then evaluates every policy at once (see `controller::run`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How long a lease is valid without renewal: a standby takes over at most this long after the leader dies.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
pub const LEASE_GRACE_SECONDS: u64 = 5;

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot set up the leader Lease {namespace}/{name}: {source}")]
    Build {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
}

/// A running election. [`Election::stop`] releases the lease; dropping it keeps campaigning in the background.
pub struct Election {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
    manager: tokio::task::AbortHandle,
}

impl Election {
    /// Abandons the election without releasing the lease, as a crashed replica would: a standby takes over
    /// only when the lease expires.
    pub fn abandon(self) {
        self.manager.abort();
        self.task.abort();
    }

    /// Stops campaigning, releases the lease if held, and clears the flag.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Which Lease to campaign for, as whom, and how long a lease lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

impl LeaseConfig {
    /// A config with the default timing.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration_seconds: LEASE_DURATION_SECONDS,
            grace_seconds: LEASE_GRACE_SECONDS,
        }
    }
}

/// Campaigns for the Lease, keeping `leader` (and the leader metric) up to date.
pub async fn start(
    client: Client,
    config: &LeaseConfig,
    leader: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<Election, LeaderError> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration_seconds)
        .with_grace(config.grace_seconds)
        .build()
        .await
        .map_err(|source| LeaderError::Build {
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            source,
        })?;
    let (mut changes, manager_task) = manager.watch().await;
    let manager_abort = manager_task.abort_handle();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let is_leader = *changes.borrow_and_update();
                    leader.store(is_leader, Ordering::SeqCst);
                    metrics.set_leader(is_leader);
                    tracing::info!(is_leader, "leadership changed");
                }
            }
        }
        leader.store(false, Ordering::SeqCst);
        metrics.set_leader(false);
        // Dropping the receiver makes the manager release the lease and return.
        drop(changes);
        match manager_task.await {
            Ok(Ok(_)) => tracing::info!("leader lease released"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot release the leader lease"),
            Err(error) => tracing::warn!(%error, "leader election task failed"),
        }
    });
    Ok(Election { stop, task, manager: manager_abort })
}
