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
    /// Reads on a replica abandoned at `routing.read_timeout` (then retried elsewhere).
    pub read_timeouts: AtomicU64,
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
            read_timeouts: AtomicU64::default(),
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
            read_timeouts: self.read_timeouts.load(Relaxed),
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
    /// Reads abandoned on a replica at `routing.read_timeout` (each then retried elsewhere).
    pub read_timeouts: u64,
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

impl RouterCounters {
    /// What was counted between `earlier` and `self` (two snapshots of one handle): counters
    /// only grow, so a window is a difference, as with Prometheus counters.
    ///
    /// ```no_run
    /// # async fn f(db: covet_replication::ReplicatedPool) {
    /// let before = db.counters();
    /// // ... the work to look at ...
    /// let window = db.counters().since(&before);
    /// println!("{} of {} reads on replicas", window.to_replica, window.by_class.read);
    /// # }
    /// ```
    #[must_use]
    pub fn since(&self, earlier: &RouterCounters) -> RouterCounters {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let (c, e) = (&self.by_class, &earlier.by_class);
        RouterCounters {
            to_primary: d(self.to_primary, earlier.to_primary),
            to_replica: d(self.to_replica, earlier.to_replica),
            writes: d(self.writes, earlier.writes),
            by_preference: d(self.by_preference, earlier.by_preference),
            fallbacks: d(self.fallbacks, earlier.fallbacks),
            hints: d(self.hints, earlier.hints),
            overrides: d(self.overrides, earlier.overrides),
            consistency: d(self.consistency, earlier.consistency),
            by_class: ClassCounters {
                read: d(c.read, e.read),
                write: d(c.write, e.write),
                transaction_control: d(c.transaction_control, e.transaction_control),
                session_state: d(c.session_state, e.session_state),
                unknown: d(c.unknown, e.unknown),
            },
            retries: d(self.retries, earlier.retries),
            refused_writes: d(self.refused_writes, earlier.refused_writes),
            read_timeouts: d(self.read_timeouts, earlier.read_timeouts),
            errors: d(self.errors, earlier.errors),
        }
    }
}

/// Where a statement ran and why: [`Session::last_route`](crate::Session::last_route).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Routed {
    /// The node that ran it.
    pub node: crate::core::NodeId,
    /// Its role then.
    pub role: crate::core::Role,
    /// Why it went there.
    pub reason: RouteReason,
}
