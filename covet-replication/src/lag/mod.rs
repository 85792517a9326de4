//! Replication lag: how far behind the primary each replica is, in bytes and in time.

mod history;

pub(crate) use history::WalHistory;
