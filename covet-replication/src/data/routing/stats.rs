//! Counters of routing decisions.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::classify::QueryClass;

/// Why a statement ran where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RouteReason {
    /// The statement writes, controls a transaction or changes session state.
    Write,
    /// A read placed by the read preference.
    ReadPreference,
    /// A read sent to the primary because no replica was eligible.
    Fallback,
    /// A `/* covet:primary */` or `/* covet:replica */` comment.
    Hint,
    /// `using(..)` or `with_target(..)`.
    Override,
    /// A retry after a failure on another node.
    Retry,
    /// A read sent to the primary to keep a session's promise (`Strong`, a write window, or no
    /// replica caught up in time).
    Consistency,
}

const REASONS: usize = 7;

impl RouteReason {
    fn index(self) -> usize {
        self as usize
    }
}

/// Lock-free counters updated on the hot path, mirrored to the `metrics` facade through handles
/// registered once (install the application's recorder before connecting).
#[derive(Debug)]
pub(crate) struct RouterStats {
    metrics: [metrics::Counter; REASONS],
    pub to_primary: AtomicU64,
    pub to_replica: AtomicU64,
    by_reason: [AtomicU64; REASONS],
    /// Read, write, transaction control, session state, unknown.
    by_class: [AtomicU64; 5],
    pub retries: AtomicU64,
    /// Statements a standby refused with 25006 and the primary then ran.
    pub refused_writes: AtomicU64,
    pub errors: AtomicU64,
}

impl Default for RouterStats {
    fn default() -> Self {
        RouterStats {
            metrics: ALL_REASONS.map(|r| metrics::counter!("covet_route_decisions_total", "reason" => r.name())),
            to_primary: AtomicU64::default(),
            to_replica: AtomicU64::default(),
            by_reason: Default::default(),
            by_class: Default::default(),
            retries: AtomicU64::default(),
            refused_writes: AtomicU64::default(),
            errors: AtomicU64::default(),
        }
    }
}

const ALL_REASONS: [RouteReason; REASONS] = [
    RouteReason::Write,
    RouteReason::ReadPreference,
    RouteReason::Fallback,
    RouteReason::Hint,
    RouteReason::Override,
    RouteReason::Retry,
    RouteReason::Consistency,
];

impl RouteReason {
    /// The reason as a metric label and in logs.
    pub fn name(self) -> &'static str {
        match self {
            RouteReason::Write => "write",
            RouteReason::ReadPreference => "read_preference",
            RouteReason::Fallback => "fallback",
            RouteReason::Hint => "hint",
            RouteReason::Override => "override",
            RouteReason::Retry => "retry",
            RouteReason::Consistency => "consistency",
        }
    }
}

impl RouterStats {
    pub fn record(&self, to_primary: bool, reason: RouteReason, class: QueryClass) {
        let class = match class {
            QueryClass::Read => 0,
            QueryClass::Write => 1,
            QueryClass::TransactionControl => 2,
            QueryClass::SessionState => 3,
            QueryClass::Unknown => 4,
        };
        self.by_class[class].fetch_add(1, Relaxed);
        if to_primary { &self.to_primary } else { &self.to_replica }.fetch_add(1, Relaxed);
        self.by_reason[reason.index()].fetch_add(1, Relaxed);
        self.metrics[reason.index()].increment(1);
    }

    pub fn snapshot(&self) -> RouterCounters {
        let r = |reason: RouteReason| self.by_reason[reason.index()].load(Relaxed);
        RouterCounters {
            to_primary: self.to_primary.load(Relaxed),
            to_replica: self.to_replica.load(Relaxed),
            writes: r(RouteReason::Write),
            by_preference: r(RouteReason::ReadPreference),
            fallbacks: r(RouteReason::Fallback),
            hints: r(RouteReason::Hint),
            overrides: r(RouteReason::Override),
            consistency: r(RouteReason::Consistency),
            by_class: ClassCounters {
                read: self.by_class[0].load(Relaxed),
                write: self.by_class[1].load(Relaxed),
                transaction_control: self.by_class[2].load(Relaxed),
                session_state: self.by_class[3].load(Relaxed),
                unknown: self.by_class[4].load(Relaxed),
            },
            retries: self.retries.load(Relaxed),
            refused_writes: self.refused_writes.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// A snapshot of the router's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RouterCounters {
    /// Statements sent to the primary (every attempt counts).
    pub to_primary: u64,
    /// Statements sent to a replica (every attempt counts).
    pub to_replica: u64,
    /// Routed to the primary because they need it.
    pub writes: u64,
    /// Reads placed by the read preference.
    pub by_preference: u64,
    /// Reads sent to the primary because no replica was eligible.
    pub fallbacks: u64,
    /// Placed by a comment hint.
    pub hints: u64,
    /// Placed by `using(..)` or `with_target(..)`.
    pub overrides: u64,
    /// Reads sent to the primary to keep a session's promise.
    pub consistency: u64,
    /// Statements by the classifier's verdict.
    pub by_class: ClassCounters,
    /// Attempts after a failure.
    pub retries: u64,
    /// Statements a standby refused as writes (SQLSTATE 25006), then run on the primary.
    pub refused_writes: u64,
    /// Statements that failed after routing.
    pub errors: u64,
}

/// Routed statements (every attempt) by the classifier's verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ClassCounters {
    /// Reads.
    pub read: u64,
    /// Writes.
    pub write: u64,
    /// Transaction control.
    pub transaction_control: u64,
    /// Session state.
    pub session_state: u64,
    /// Text the parser could not read.
    pub unknown: u64,
}
