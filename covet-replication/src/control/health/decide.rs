//! The health state machine: a pure function of the last check and the counters.

use std::time::{Duration, Instant};

use crate::cluster::{NodeState, Role};
use crate::config::HealthConfig;

/// Consecutive outcomes of checks on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub failures: u32,
    pub successes: u32,
    /// Since when a lagging replica's lag has been back within its limit.
    pub below_since: Option<Instant>,
    /// Since when the node has been down, and whether its statements were given up on since.
    pub down_since: Option<(Instant, bool)>,
}

/// What a check found, reduced to what decides the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    Failed,
    /// Failed again within one health interval of a failure that counted: rounds asked for out
    /// of turn (a write waiting for a new primary) must not bring `failure_threshold` sooner
    /// than the interval would.
    FailedAgain,
    Answered {
        /// The server's role matches the one the node has in the topology.
        role_ok: bool,
        rtt: Duration,
        /// A replica above its lag limit.
        lagging: bool,
    },
}

/// The node's next state. A node that was down (or failing) needs `success_threshold`
/// successes in a row to come back; `failure_threshold` failures in a row take it down.
pub(crate) fn decide(prev: NodeState, counters: &mut Counters, observed: Observed, cfg: &HealthConfig) -> NodeState {
    if matches!(prev, NodeState::Draining | NodeState::Fenced) {
        return prev;
    }
    match observed {
        Observed::FailedAgain => {
            counters.successes = 0;
            if prev == NodeState::Down {
                NodeState::Down
            } else {
                NodeState::Unhealthy
            }
        }
        Observed::Failed => {
            counters.failures = counters.failures.saturating_add(1);
            counters.successes = 0;
            if counters.failures >= cfg.failure_threshold.max(1) || prev == NodeState::Down {
                NodeState::Down
            } else {
                NodeState::Unhealthy
            }
        }
        Observed::Answered { role_ok, rtt, lagging } => {
            counters.successes = counters.successes.saturating_add(1);
            counters.failures = 0;
            let recovering = matches!(prev, NodeState::Down | NodeState::Unhealthy);
            if recovering && counters.successes < cfg.success_threshold.max(1) {
                prev
            } else if !role_ok {
                NodeState::Unhealthy
            } else if lagging {
                NodeState::Lagging
            } else if rtt > cfg.degraded_latency {
                NodeState::Degraded
            } else {
                NodeState::Healthy
            }
        }
    }
}

/// Whether to give up on the statements in flight on a primary now: once it has been down for
/// `hold` (as long as a new write waits for it), once per outage. Behind a partition their
/// answers would come when TCP gives up, minutes later, and their outcome is unknown either way.
pub(crate) fn give_up_in_flight(state: NodeState, counters: &mut Counters, now: Instant, hold: Duration) -> bool {
    if state != NodeState::Down {
        counters.down_since = None;
        return false;
    }
    let (since, given_up) = counters.down_since.get_or_insert((now, false));
    if *given_up || now.duration_since(*since) < hold {
        return false;
    }
    *given_up = true;
    true
}

/// Whether a replica counts as lagging: as soon as its lag is over the limit, and until it has
/// stayed within the limit for `readmit_after` (one good sample after a spike is not recovery).
pub(crate) fn lagging(
    prev: NodeState,
    over: bool,
    below_since: &mut Option<Instant>,
    now: Instant,
    readmit_after: Duration,
) -> bool {
    if over || prev != NodeState::Lagging {
        *below_since = None;
        return over;
    }
    let since = *below_since.get_or_insert(now);
    now.saturating_duration_since(since) < readmit_after
}

/// Whether a server that says `in_recovery` fits the role the topology gives it.
pub(crate) fn role_ok(role: Role, in_recovery: bool) -> bool {
    match role {
        Role::Primary => !in_recovery,
        Role::Replica => in_recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Observed {
        Observed::Answered {
            role_ok: true,
            rtt: Duration::from_millis(1),
            lagging: false,
        }
    }

    fn run(cfg: &HealthConfig, start: NodeState, seq: &[Observed]) -> Vec<NodeState> {
        let mut c = Counters::default();
        let mut s = start;
        seq.iter()
            .map(|&o| {
                s = decide(s, &mut c, o, cfg);
                s
            })
            .collect()
    }

    #[test]
    fn failures_take_a_node_down_after_the_threshold_and_successes_bring_it_back() {
        let cfg = HealthConfig {
            failure_threshold: 3,
            success_threshold: 2,
            ..HealthConfig::default()
        };
        use NodeState::*;
        let f = Observed::Failed;
        assert_eq!(
            run(&cfg, Healthy, &[f, f, f, ok(), ok(), ok()]),
            [Unhealthy, Unhealthy, Down, Down, Healthy, Healthy]
        );
        // A single blip: unhealthy, then back after the success threshold.
        assert_eq!(run(&cfg, Healthy, &[f, ok(), ok()]), [Unhealthy, Unhealthy, Healthy]);
        // An interrupted run of successes starts again.
        assert_eq!(run(&cfg, Down, &[ok(), f, ok(), ok()]), [Down, Down, Down, Healthy]);
        // Failures again within an interval (rounds asked for out of turn) do not count: only
        // failures an interval apart take it down, and a success still needs its run.
        let again = Observed::FailedAgain;
        assert_eq!(
            run(&cfg, Healthy, &[f, again, again, again, again, f, again, f]),
            [
                Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Down
            ]
        );
        assert_eq!(run(&cfg, Down, &[ok(), again, ok(), ok()]), [Down, Down, Down, Healthy]);
    }

    #[test]
    fn answers_map_to_role_lag_and_latency_states() {
        let cfg = HealthConfig::default();
        let slow = Observed::Answered {
            role_ok: true,
            rtt: cfg.degraded_latency * 2,
            lagging: false,
        };
        let lag = Observed::Answered {
            role_ok: true,
            rtt: Duration::ZERO,
            lagging: true,
        };
        let wrong = Observed::Answered {
            role_ok: false,
            rtt: Duration::ZERO,
            lagging: false,
        };
        assert_eq!(
            run(&cfg, NodeState::Healthy, &[slow, lag, wrong, ok()]),
            [
                NodeState::Degraded,
                NodeState::Lagging,
                NodeState::Unhealthy,
                NodeState::Healthy
            ]
        );
        assert_eq!(
            run(&cfg, NodeState::Draining, &[ok(), Observed::Failed]),
            [NodeState::Draining; 2]
        );
    }

    #[test]
    fn a_lagging_replica_is_readmitted_only_after_staying_within_its_limit() {
        let t0 = Instant::now();
        let after = Duration::from_secs(5);
        let mut since = None;
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(lagging(NodeState::Healthy, true, &mut since, at(0), after));
        assert!(
            lagging(NodeState::Lagging, false, &mut since, at(1), after),
            "just back within the limit"
        );
        assert!(lagging(NodeState::Lagging, false, &mut since, at(5), after));
        assert!(
            lagging(NodeState::Lagging, true, &mut since, at(6), after),
            "a spike restarts the clock"
        );
        assert!(lagging(NodeState::Lagging, false, &mut since, at(7), after));
        assert!(
            !lagging(NodeState::Lagging, false, &mut since, at(12), after),
            "5 s within the limit"
        );
        assert!(!lagging(NodeState::Healthy, false, &mut since, at(13), after));
    }

    #[test]
    fn statements_on_a_down_primary_are_given_up_on_once_per_outage_after_hold() {
        let hold = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = Counters::default();
        let seq = [
            (NodeState::Unhealthy, 0, false),
            (NodeState::Down, 1, false),
            (NodeState::Down, 10, false),
            (NodeState::Down, 11, true),
            (NodeState::Down, 30, false),
            (NodeState::Healthy, 31, false),
            (NodeState::Down, 32, false),
            (NodeState::Down, 42, true),
        ];
        let got: Vec<bool> = seq
            .iter()
            .map(|&(s, t, _)| give_up_in_flight(s, &mut c, at(t), hold))
            .collect();
        let want: Vec<bool> = seq.iter().map(|&(.., w)| w).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn roles() {
        assert!(role_ok(Role::Primary, false));
        assert!(!role_ok(Role::Primary, true));
        assert!(role_ok(Role::Replica, true));
        assert!(!role_ok(Role::Replica, false));
    }
}
