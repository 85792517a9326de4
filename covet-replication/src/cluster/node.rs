use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlx::PgPool;

use super::{NodeId, NodeState, Role};
use crate::config::NodeConfig;
use crate::core::Lsn;
use crate::core::now_us;

/// One node at run time: its pool and what the health loop and the router know of it.
///
/// Everything the router reads per query is an atomic, so routing takes no lock.
pub(crate) struct Node {
    pub id: NodeId,
    pub config: NodeConfig,
    pub pool: PgPool,
    role: AtomicU8,
    state: AtomicU8,
    /// Queries running on this node now (load for power-of-two-choices).
    pub in_flight: AtomicU32,
    /// EWMA of query latency, in microseconds, and when it last had a sample.
    latency_us: AtomicU64,
    latency_at_us: AtomicU64,
    /// EWMA of health-check round trips, in microseconds (what `Nearest` compares).
    rtt_us: AtomicU64,
    /// Replay LSN (replicas) or current WAL LSN (primary) at the last check.
    pub lsn: AtomicU64,
    /// The server incarnation `lsn` was reported by (see `health::check::Sample`; 0: none).
    incarnation: AtomicU64,
    /// The standby's `wal_retrieve_retry_interval` in ms at the last check (0: unknown).
    pub retrieve_retry_ms: AtomicU32,
    /// It answered the last check as a writable primary (not in recovery, not read-only).
    pub writable: AtomicBool,
    /// Replication lag at the last check.
    pub lag_bytes: AtomicU64,
    pub lag_us: AtomicU64,
    /// On [`now_us`]'s clock, how fresh this node's data was at least when last measured: the
    /// primary's position was read then; a replica had everything the primary had then. One
    /// atomic, so that a read never pairs a new measurement with an old one. 0: not measured
    /// since it was lost.
    fresh_as_of_us: AtomicU64,
    /// Metric handles, registered once: the hot path only increments.
    queries_metric: metrics::Counter,
    query_seconds_metric: metrics::Histogram,
    /// Set by the data plane when a statement's connection to this replica failed: it takes no
    /// reads until the health loop, woken at once, has judged it (see `Cluster::report_failure`).
    suspect: std::sync::atomic::AtomicBool,
    /// Cancelled by [`abandon_in_flight`](Self::abandon_in_flight); statements hold the token of
    /// the moment they started.
    abandon: arc_swap::ArcSwap<tokio_util::sync::CancellationToken>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("role", &self.role())
            .field("state", &self.state())
            .field("in_flight", &self.in_flight.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// Weight of a new sample in the latency averages: about the last ten samples count.
const EWMA_ALPHA: f64 = 0.1;

impl Node {
    pub fn new(config: NodeConfig, pool: PgPool, role: Role, state: NodeState) -> Self {
        let label = config.id.clone();
        Node {
            queries_metric: metrics::counter!("covet_queries_total", "node" => label.clone()),
            query_seconds_metric: metrics::histogram!("covet_query_duration_seconds", "node" => label),
            id: NodeId::from(config.id.as_str()),
            config,
            pool,
            role: AtomicU8::new(role as u8),
            state: AtomicU8::new(state.as_u8()),
            in_flight: AtomicU32::new(0),
            latency_us: AtomicU64::new(0),
            latency_at_us: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            lsn: AtomicU64::new(0),
            incarnation: AtomicU64::new(0),
            retrieve_retry_ms: AtomicU32::new(0),
            writable: AtomicBool::new(false),
            lag_bytes: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            fresh_as_of_us: AtomicU64::new(0),
            suspect: Default::default(),
            abandon: Default::default(),
        }
    }

    /// What a statement starting now waits on besides its answer: the failover's word that
    /// this node's answers must not be heard any more.
    pub fn abandon_token(&self) -> Arc<tokio_util::sync::CancellationToken> {
        self.abandon.load_full()
    }

    /// Ends every statement running on this node now, without waiting for its answer: a
    /// failover does it to the old primary right before promoting another node (so that a
    /// paused primary that wakes cannot acknowledge a write the new timeline lacks: the
    /// outcome is unknown), health to a replica that stopped answering (its reads are retried
    /// elsewhere). Statements that start later are not affected.
    pub fn abandon_in_flight(&self) {
        self.abandon.swap(Arc::default()).cancel();
    }

    pub fn role(&self) -> Role {
        if self.role.load(Relaxed) == Role::Primary as u8 {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    /// The health loop's verdict.
    pub fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Relaxed))
    }

    /// What routing goes by: the health loop's verdict, or `Unhealthy` while a failure the data
    /// plane reported waits for its judgment.
    pub fn routing_state(&self) -> NodeState {
        match self.state() {
            s if s.serves_reads() && self.suspect.load(Relaxed) => NodeState::Unhealthy,
            s => s,
        }
    }

    /// The data plane's report (see `Cluster::report_failure`); false if already reported or
    /// not serving reads.
    pub(super) fn suspect(&self) -> bool {
        self.state().serves_reads() && !self.suspect.swap(true, Relaxed)
    }

    /// Takes a report for the health loop to judge.
    pub fn take_suspect(&self) -> bool {
        self.suspect.swap(false, Relaxed)
    }

    /// After a failover: the promoted standby's replacement is a new node; the old primary
    /// becomes a (fenced) replica.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Relaxed);
    }

    /// Moves from `from` to `to` unless someone changed the state meanwhile (a failover's
    /// `Fenced`, a removal's `Draining` must not be overwritten by a stale decision).
    pub fn transition(&self, from: NodeState, to: NodeState) -> bool {
        self.state
            .compare_exchange(from.as_u8(), to.as_u8(), Relaxed, Relaxed)
            .is_ok()
    }

    /// Sets the state; returns the previous one.
    pub fn set_state(&self, state: NodeState) -> NodeState {
        NodeState::from_u8(self.state.swap(state.as_u8(), Relaxed))
    }

    pub fn weight(&self) -> u32 {
        self.config.weight.max(1)
    }

    /// The query latency average, halved for every second without a sample: a node that was
    /// slow once and then got no traffic (so no chance to look better) is tried again.
    pub fn latency(&self) -> Duration {
        let idle_s = now_us().saturating_sub(self.latency_at_us.load(Relaxed)) / 1_000_000;
        Duration::from_micros(self.latency_us.load(Relaxed).checked_shr(idle_s as u32).unwrap_or(0))
    }

    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Relaxed))
    }

    pub fn record_latency(&self, d: Duration) {
        // Decay first, so a sample after a quiet spell starts from what `latency()` showed.
        self.latency_us.store(self.latency().as_micros() as u64, Relaxed);
        ewma(&self.latency_us, d);
        self.latency_at_us.store(now_us(), Relaxed);
    }

    pub fn record_rtt(&self, d: Duration) {
        ewma(&self.rtt_us, d);
    }

    pub fn replay_lsn(&self) -> Lsn {
        Lsn(self.lsn.load(Relaxed))
    }

    /// Records a replay position seen outside the health loop (positions only move forward).
    pub fn observe_lsn(&self, lsn: Lsn) {
        self.lsn.fetch_max(lsn.0, Relaxed);
    }

    /// Records the position a health check saw on server incarnation `incarnation`. Within
    /// one incarnation positions only move forward; a new one (restarted from another copy of
    /// the data, perhaps an older one) starts from what it reports.
    pub fn observe_replay(&self, incarnation: u64, lsn: Lsn) {
        if self.incarnation.swap(incarnation, Relaxed) == incarnation {
            self.lsn.fetch_max(lsn.0, Relaxed);
        } else {
            self.lsn.store(lsn.0, Relaxed);
        }
    }

    /// The replica stopped answering (a check or a read's connection failed): its reads in
    /// flight go elsewhere, and its cached position is forgotten, since whatever answers at its
    /// address next may be another copy further behind (reads that need a position check it
    /// on their connection until a health check reports one).
    pub fn lost(&self) {
        self.abandon_in_flight();
        self.lsn.store(0, Relaxed);
        self.incarnation.store(0, Relaxed);
        self.fresh_as_of_us.store(0, Relaxed);
    }

    /// A health check that began at `at` found this node's data at most `stale` old then (the
    /// primary's: zero). Stored after the position it goes with, and read before it
    /// (Release/Acquire): a reader never pairs this time with an older position.
    pub fn mark_measured(&self, at: std::time::Instant, stale: Duration) {
        let back = at.elapsed().saturating_add(stale);
        let back = u64::try_from(back.as_micros()).unwrap_or(u64::MAX);
        self.fresh_as_of_us.store(
            now_us().saturating_sub(back).max(1),
            std::sync::atomic::Ordering::Release,
        );
    }

    /// As if a health check had found this node's data `stale` old, with lag `lag`, now.
    #[cfg(test)]
    pub fn measured(&self, stale: Duration, lag: Duration) {
        self.lag_us.store(lag.as_micros() as u64, Relaxed);
        self.mark_measured(std::time::Instant::now(), stale);
    }

    /// At most how old the data a read here sees is: how old it was when last measured, plus
    /// the time since (the replica may have stopped replaying right after). `Duration::MAX`
    /// if not measured since it was lost. For the primary: the age of its measured position.
    pub fn staleness(&self) -> Duration {
        match self.fresh_as_of_us.load(std::sync::atomic::Ordering::Acquire) {
            0 => Duration::MAX,
            at => Duration::from_micros(now_us().saturating_sub(at)),
        }
    }

    pub fn lag(&self) -> (u64, Duration) {
        (
            self.lag_bytes.load(Relaxed),
            Duration::from_micros(self.lag_us.load(Relaxed)),
        )
    }

    /// Marks a query as running here until the guard drops.
    pub fn start_query(self: &Arc<Self>) -> InFlight {
        // SeqCst pairs with the switchover's hold-then-drain: either it sees this query in
        // flight, or the query sees writes held (a locked add costs the same on x86).
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.queries_metric.increment(1);
        InFlight {
            node: Arc::clone(self),
            started: None,
        }
    }
}

fn ewma(slot: &AtomicU64, d: Duration) {
    let sample = d.as_micros().min(u128::from(u64::MAX)) as u64;
    // Lost updates between racing writers only drop a sample; an average does not need more.
    // Starting from zero, not from the first sample: a first query is often an outlier (it also
    // prepares the statement), and a node that starts out looking slow gets no traffic to prove
    // otherwise. A new node looks fast for a few queries instead, which is how it gets measured.
    let old = slot.load(Relaxed);
    let new = (old as f64 * (1.0 - EWMA_ALPHA) + sample as f64 * EWMA_ALPHA) as u64;
    slot.store(new.max(1), Relaxed);
}

/// A query running on a node: counted in `in_flight`, timed into the latency average.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub node: Arc<Node>,
    started: Option<std::time::Instant>,
}

impl InFlight {
    /// Starts the latency clock: called once a connection is in hand, so the time to open a
    /// connection (a one-off) does not count as the node being slow.
    pub fn connected(&mut self) {
        self.started = Some(std::time::Instant::now());
    }

    /// The query succeeded: its latency goes into the average. Failures don't count (a query
    /// cut off by a crash says nothing about the node's speed once it is back).
    pub fn succeeded(&mut self) {
        if let Some(started) = self.started.take() {
            let took = started.elapsed();
            self.node.record_latency(took);
            self.node.query_seconds_metric.record(took.as_secs_f64());
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let config = NodeConfig::from_url("postgres://u@127.0.0.1:1/db").unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy_with(config.connect_options());
        Node::new(config, pool, Role::Replica, NodeState::Healthy)
    }

    /// Positions only move forward within one server incarnation; a new one (a standby restored
    /// from an older copy at the same address) starts from what it reports, and a replica that
    /// stopped answering has no position until a check reports one.
    #[tokio::test]
    async fn a_position_holds_for_the_incarnation_that_reported_it() {
        let n = node();
        n.observe_replay(7, Lsn(100));
        n.observe_replay(7, Lsn(90));
        assert_eq!(n.replay_lsn(), Lsn(100), "same incarnation: never backwards");
        n.observe_lsn(Lsn(120));
        assert_eq!(n.replay_lsn(), Lsn(120));
        n.observe_replay(8, Lsn(40));
        assert_eq!(n.replay_lsn(), Lsn(40), "a new incarnation starts from its own report");
        n.lost();
        assert_eq!(n.replay_lsn(), Lsn::ZERO);
        n.observe_replay(8, Lsn(50));
        assert_eq!(n.replay_lsn(), Lsn(50));
    }
}
