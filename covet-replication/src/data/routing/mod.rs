//! Deciding where each statement runs.

mod catalog;
mod decide;
mod retry;
mod router;
mod select;
mod stats;
mod target;

pub(crate) use catalog::Catalog;
pub(crate) use decide::{Route, target_allows_primary};
pub(crate) use retry::{Failure, backoff, classify_error};
pub(crate) use router::{Constraints, may_retry_elsewhere, route};
pub(crate) use stats::RouterStats;
pub use stats::{ClassCounters, RouteReason, Routed, RouterCounters};
pub(crate) use target::scoped as scoped_target;
pub use target::{Target, with_target};
