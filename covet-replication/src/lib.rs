#![doc = include_str!("lib.md")]
#![deny(clippy::unwrap_used, clippy::print_stdout)]

mod classify;
mod config;
mod error;
mod executor;
mod health;
mod lag;
mod lsn;
mod manager;
mod pool;
mod routing;
mod topology;

#[cfg(feature = "testing")]
pub mod testing;

pub use classify::{
    Classifier, ClassifierStats, DEFAULT_CACHE_CAPACITY, FunctionSafety, Hint, QueryClass, QueryKind,
    TransactionControl, TransactionOp, classify,
};
pub use config::{
    ConfigError, HealthConfig, NodeConfig, ParseReadPreferenceError, Password, PoolConfig, ReadPreference,
    ReplicationConfig, ReplicationConfigBuilder, RetryConfig, RoutingConfig, TlsMode, UnknownFunctionPolicy,
};
pub use error::Error;
pub use executor::Transaction;
pub use lsn::{Lsn, ParseLsnError};
pub use manager::{NodeStatus, ReplicaManager};
pub use pool::ReplicatedPool;
pub use routing::{RouteReason, RouterCounters, Target, with_target};
pub use topology::{NodeId, NodeState, Role};
