//! [`FailoverConfig`]: when the primary is replaced, by which standby, and how the old one is fenced.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::optional_u64;

/// Failover: detection, election, promotion, repointing and fencing.
///
/// Detection is the health loop's: the primary is *down* after `health.failure_threshold` failed
/// checks. Automatic failover then goes ahead only if every standby it can reach has lost its
/// own connection to the primary (a standby still streaming proves the primary alive: the
/// manager is cut off, the database is not) and at least `min_replicas` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailoverConfig {
    /// Who replaces a failed primary: this process (`own`), this process once an operator
    /// approves (`supervised`), whoever manages the cluster (`follow`), or the fleet's etcd lease
    /// holder (`coordinated`). See [`FailoverMode`].
    pub mode: FailoverMode,
    /// In `supervised` mode, how long a proposed failover waits for approval.
    #[serde(with = "humantime_serde")]
    pub approval_timeout: Duration,
    /// Fail over automatically when the primary is down. Off: only
    /// [`FailoverManager::failover`](crate::failover::FailoverManager::failover) and
    /// [`switchover`](crate::failover::FailoverManager::switchover) do.
    pub automatic: bool,
    /// Standbys that must answer (and agree the primary is gone) before a failover.
    pub min_replicas: usize,
    /// A candidate that had received this many bytes less WAL than the primary's last known
    /// position is not promoted automatically (`none`: no limit).
    #[serde(with = "optional_u64")]
    pub max_data_loss_bytes: Option<u64>,
    /// Nodes never promoted (e.g. a disaster-recovery standby far away).
    pub exclude: Vec<String>,
    /// How long `pg_promote` may take.
    #[serde(with = "humantime_serde")]
    pub promote_timeout: Duration,
    /// How long a switchover waits for its target to replay everything the old primary wrote.
    #[serde(with = "humantime_serde")]
    pub catchup_timeout: Duration,
    /// How long to wait for each other standby to stream from the new primary.
    #[serde(with = "humantime_serde")]
    pub repoint_timeout: Duration,
    /// While a failover runs, writes wait up to this long for the new primary instead of failing.
    #[serde(with = "humantime_serde")]
    pub hold_writes: Duration,
    /// Least time between two automatic failovers (no flapping).
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Make a reachable old primary read-only (`default_transaction_read_only`) and end its
    /// client sessions, during a switchover and whenever a fenced node comes back as a primary.
    pub fence: bool,
    /// Append every failover event to this file, one JSON object per line.
    pub audit_log: Option<PathBuf>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            // A process that sees a promotion it did not make stops acting on its own (see
            // FailoverMode::Own), so `own` never fights an HA manager for long; `follow` is
            // the setting for clusters something else manages.
            mode: FailoverMode::Own,
            approval_timeout: Duration::from_secs(60),
            automatic: true,
            // One witness: with none, "the primary is gone" rests on our own view alone.
            min_replicas: 1,
            max_data_loss_bytes: None,
            exclude: Vec::new(),
            promote_timeout: Duration::from_secs(30),
            catchup_timeout: Duration::from_secs(30),
            repoint_timeout: Duration::from_secs(30),
            // Longer than a typical failover (detection is over by then): writes see a pause.
            hold_writes: Duration::from_secs(10),
            cooldown: Duration::from_secs(60),
            fence: true,
            audit_log: None,
        }
    }
}

/// Who replaces a failed primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailoverMode {
    /// This process: with `automatic`, it fails over when the primary is down, repoints the
    /// other standbys and fences a former primary that comes back. Once it sees a promotion it
    /// did not make (another process or an HA manager manages the cluster), it follows instead,
    /// until restarted: two managers acting on one cluster make two primaries.
    #[default]
    Own,
    /// As `own`, but an automatic failover stops before promoting: it is proposed (an aborted
    /// event saying whom it would promote, given to event callbacks and to the approver), and
    /// goes ahead only when an operator approves within `approval_timeout`
    /// ([`FailoverManager::approve`](crate::failover::FailoverManager::approve), an approver
    /// callback, or `covet failover` from another process, which this one then follows).
    Supervised,
    /// Never promote, fence or repoint: follow whichever node answers as the primary (Patroni,
    /// CloudNativePG, a cloud's managed failover). Manual failovers and switchovers are refused.
    Follow,
    /// A fleet of processes without an HA manager, coordinated through etcd (`[etcd]`, which
    /// makes `own` mean this): the process holding the fleet's etcd lease acts as `own` does,
    /// but promotes only after recording the promotion in etcd under its lease, and publishes
    /// the new primary there; every other process follows, switching as soon as etcd says so.
    /// A process that cannot reach etcd never promotes. Needs the crate's `etcd` feature.
    Coordinated,
}

impl FailoverMode {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            FailoverMode::Own => "own",
            FailoverMode::Supervised => "supervised",
            FailoverMode::Follow => "follow",
            FailoverMode::Coordinated => "coordinated",
        }
    }
}

impl FailoverConfig {
    /// Sets `mode`.
    #[must_use]
    pub fn with_mode(mut self, mode: FailoverMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets `automatic`.
    #[must_use]
    pub fn with_automatic(mut self, automatic: bool) -> Self {
        self.automatic = automatic;
        self
    }

    /// Sets `audit_log`.
    #[must_use]
    pub fn with_audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// Sets `cooldown`.
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets `exclude`.
    #[must_use]
    pub fn with_exclude<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.exclude = ids.into_iter().map(Into::into).collect();
        self
    }
}
