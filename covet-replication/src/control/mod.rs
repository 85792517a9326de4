//! The control plane: the health loop, lag, failover. It writes the nodes' health views and
//! the topology in the cluster snapshot; it never imports the data plane.

pub(crate) mod callbacks;
pub(crate) mod failover;
pub(crate) mod health;
pub(crate) mod lag;
mod membership;

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use failover::FailoverState;
use health::Health;
use lag::{LagMonitor, WalHistory};

fn patroni_client(config: &crate::config::ReplicationConfig) -> Option<crate::ha::patroni::Patroni> {
    if config.patroni.is_empty() {
        return None;
    }
    match crate::ha::patroni::Patroni::new(&config.patroni, config.health.timeout) {
        Ok(client) => Some(client),
        Err(error) => {
            // Without it the handle still follows what PostgreSQL says.
            tracing::error!(target: "covet::failover", %error, "no Patroni client");
            None
        }
    }
}

/// Primary WAL samples kept for lag estimation: an hour at the default 1 s interval.
const WAL_HISTORY: usize = 3600;

/// What the control plane keeps besides the cluster snapshot.
#[derive(Debug)]
pub(crate) struct Control {
    pub cluster: Arc<Cluster>,
    pub wal_history: Mutex<WalHistory>,
    pub lag_monitor: LagMonitor,
    pub failover: FailoverState,
    pub health: Health,
    /// Patroni's REST API, when `patroni` names it.
    pub patroni: Option<crate::ha::patroni::Patroni>,
    /// This process's member of the fleet, when `etcd` names endpoints.
    #[cfg(feature = "etcd")]
    pub fleet: Option<Arc<crate::ha::etcd::Fleet>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Control {
    /// Starts the control plane's tasks, the supervisor's job: the health loop, and the
    /// failover task that acts on its rounds. They run until `shutdown` is cancelled.
    pub fn start(cluster: Arc<Cluster>, shutdown: CancellationToken) -> Arc<Self> {
        let config = &cluster.config;
        let control = Arc::new(Control {
            wal_history: Mutex::new(WalHistory::new(WAL_HISTORY)),
            lag_monitor: LagMonitor::new(config.lag),
            failover: FailoverState::new(&config.failover),
            health: Health::default(),
            patroni: patroni_client(config),
            #[cfg(feature = "etcd")]
            fleet: config
                .etcd
                .is_enabled()
                .then(|| Arc::new(crate::ha::etcd::Fleet::new(&config.etcd, config.health.timeout))),
            shutdown,
            tasks: TaskTracker::new(),
            cluster,
        });
        let weak = Arc::downgrade(&control);
        control
            .tasks
            .spawn(health::task(weak.clone(), control.shutdown.child_token()));
        control.tasks.spawn(failover::task(
            weak,
            control.health.rounds(),
            control.shutdown.child_token(),
        ));
        #[cfg(feature = "etcd")]
        if let Some(fleet) = &control.fleet {
            use crate::ha::etcd::{lead, watch_primary};
            let token = control.shutdown.child_token();
            // Only a process that would fail over campaigns: a `follow` one (or one with
            // `automatic` off) holding the lease would leave the fleet without a failover.
            let failover = &control.cluster.config.failover;
            let campaigns = failover.automatic
                && matches!(
                    failover.mode,
                    crate::config::FailoverMode::Own | crate::config::FailoverMode::Coordinated
                );
            if campaigns {
                control.tasks.spawn(lead(Arc::clone(fleet), token.clone()));
            } else {
                fleet.observe_only();
            }
            // A published primary: a health round now, which adopts it once it answers so.
            let cluster = Arc::clone(&control.cluster);
            let wake = move || cluster.wake.notify_one();
            control.tasks.spawn(watch_primary(Arc::clone(fleet), wake, token));
        }
        control.tasks.close();
        control
    }

    /// One health round now, and whatever the failover task makes of it (waited for up to two
    /// health timeouts): at startup, the servers say who the primary is, whatever the
    /// configuration guessed.
    pub async fn settle(&self) {
        let round = health::round(self).await;
        let mut verdicts = self.cluster.verdicts.subscribe();
        let acted = verdicts.wait_for(|v| v.round >= round.id);
        let _ = tokio::time::timeout(self.cluster.config.health.timeout * 2, acted).await;
    }

    /// Stops the tasks, waits for them to end, then closes the health loop's connections.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        self.health.close().await;
    }
}
