#![doc = include_str!("lib.md")]
#![deny(clippy::unwrap_used, clippy::print_stdout)]

// Layers, bottom up (docs/ARCHITECTURE.md): `core`, `config`, `classify` and `error` are the
// shared vocabulary; `pg` holds the queries the library sends; `cluster` is the snapshot where
// the `data` plane and the `control` plane meet (neither imports the other); the handle
// (`pool`, `manager`, `status`, `global`) and the ORM sit on top.
#[cfg(feature = "axum")]
pub mod axum;
pub mod classify;
mod cluster;
pub mod config;
mod control;
mod core;
mod data;
mod error;
mod global;
mod ha;
mod manager;
pub mod orm;
mod pg;
mod pool;
pub mod status;

#[cfg(test)]
mod layers_tests;
#[cfg(feature = "testing")]
pub mod testing;

pub mod failover {
    //! Failover and switchover ([`FailoverManager`], from `db.failover()`), their audit trail
    //! of [`FailoverEvent`]s, and why one did not happen ([`FailoverError`]).
    pub use crate::control::failover::{FailoverEvent, FailoverKind, FailoverManager, Outcome, Step};
    pub use crate::error::{ConninfoError, FailoverError, HaError, PgError};
}

pub mod lag {
    //! Replication lag: alerts with hysteresis, callbacks and windowed statistics
    //! ([`LagMonitor`], from `db.lag_monitor()`).
    pub use crate::control::lag::{Alert, AlertKind, LagMonitor, LagStats, Severity};
}

pub use config::{Consistency, IntoReplicationConfig, NodeConfig, ReadPreference, ReplicationConfig};
pub use core::{Lsn, NodeId, NodeState, ParseLsnError, Role};
pub use covet_replication_macros::Model;
#[cfg(feature = "testing")]
pub use covet_replication_macros::test;
pub use data::executor::{NodeConnection, ReadOnlyTransaction};
pub use data::routing::{RouteReason, Routed, Target, with_target};
pub use data::session::{CausalToken, Session, TokenError};
pub use data::{CopyIn, Listener};
pub use error::Error;
pub use global::{db, set_db, setup_replication};
pub use manager::ReplicaManager;
#[doc(hidden)]
pub use orm::private as __private;
pub use orm::{Model, prelude};
pub use pool::{ReplicatedPool, ReplicatedPoolOptions};
