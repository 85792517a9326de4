//! The vocabulary every layer shares: node ids, roles and states, WAL positions, the clock.
//! No I/O here.

mod clock;
mod id;
mod lsn;
mod state;
mod sync;

pub(crate) use clock::now_us;
pub use id::NodeId;
pub use lsn::{Lsn, ParseLsnError};
pub use state::{NodeState, Role};
pub(crate) use sync::lock;
