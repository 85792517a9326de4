//! Replication lag: how far behind the primary each replica is, in bytes and in time, the
//! alerts it raises and its history.

mod history;
mod monitor;
mod stats;

pub(crate) use history::WalHistory;
pub use monitor::{Alert, AlertKind, LagMonitor, Severity};
pub use stats::LagStats;
