//! Every query the library sends to a server beyond the user's statements, with typed results:
//! the one "who are you" check, WAL positions and the one wait for a standby's replay, and what
//! failover does to servers.

mod admin;
pub(crate) mod catalog;
mod check;
mod conninfo;
mod position;
pub(crate) mod version;

pub(crate) use admin::{connect, fence, promote, quiesce, repoint, survey, timeline, unfence};
#[cfg(test)]
pub(crate) use check::WalReceiver;
pub(crate) use check::{Sample, check};
pub(crate) use position::{backend_and_clock, flushed_lsn, primary_lsn, transactions_open, wait_replayed};
