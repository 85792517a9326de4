//! Choosing a node for a read: a pure function of what the health loop last saw.
//!
//! Rules, in order:
//! 1. A replica is eligible when its state serves reads (healthy or degraded), its lag is within
//!    the request's staleness bound, it has replayed the request's minimum LSN, and it is in the
//!    requested region when one is required.
//! 2. Healthy replicas are preferred over degraded ones, then the preferred region, then the
//!    preferred datacenter: each narrowing applies only if it leaves someone.
//! 3. Among what is left: power of two choices. Two distinct picks are drawn in proportion to weight; the
//!    second replaces the first only if the first's load (latency average, floored at 5 ms, ×
//!    (in-flight + 1)) is more than twice the second's. Comparable replicas therefore get reads in
//!    proportion to their weights, while a slow or piled-up replica loses traffic quickly.
//! 4. Read preference decides the fallback when no replica is eligible: `Replica` fails,
//!    `ReplicaPreferred` and `PrimaryPreferred` use the primary, `Primary` never asks, `Nearest`
//!    takes the lowest health-check round trip among eligible replicas and the primary.

use std::time::Duration;

use crate::cluster::NodeState;
use crate::config::ReadPreference;
use crate::core::Lsn;

/// What selection needs to know about a node.
pub(crate) trait Candidate {
    fn id(&self) -> &str;
    fn state(&self) -> NodeState;
    fn region(&self) -> Option<&str>;
    fn datacenter(&self) -> Option<&str>;
    fn weight(&self) -> u32;
    fn in_flight(&self) -> u32;
    fn latency(&self) -> Duration;
    fn rtt(&self) -> Duration;
    fn replay_lsn(&self) -> Lsn;
    /// The lag last measured.
    fn lag(&self) -> Duration;
    /// At most how old a read's data is here: the lag plus the age of its measurement.
    fn staleness(&self) -> Duration {
        self.lag()
    }
}

/// Constraints of one read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadRequest<'a> {
    pub preference: Option<ReadPreference>,
    /// Only nodes in this region (an explicit `Target::Region`).
    pub region: Option<&'a str>,
    pub preferred_region: Option<&'a str>,
    pub preferred_datacenter: Option<&'a str>,
    /// The replica must have replayed at least this position.
    pub min_lsn: Option<Lsn>,
    /// The replica's [staleness](Candidate::staleness) must be at most this.
    pub max_staleness: Option<Duration>,
    /// The replica's lag, as last measured, must be at most this (it may catch up in time).
    pub max_lag: Option<Duration>,
    /// Nodes that already failed this statement.
    pub exclude: &'a [crate::cluster::NodeId],
}

/// Where a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    Primary,
    /// Index into the replica slice.
    Replica(usize),
    /// The primary, because no replica was eligible.
    FallbackPrimary,
}

/// No node may serve the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoNode {
    /// `ReadPreference::Replica` (or a region/replica target) and no replica is eligible.
    NoEligibleReplica,
}

/// Random numbers in `0..n`; a parameter so tests are deterministic.
pub(crate) trait Rng {
    fn below(&mut self, n: u64) -> u64;
}

/// The thread-local fast generator.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastRand;

impl Rng for FastRand {
    fn below(&mut self, n: u64) -> u64 {
        fastrand::u64(..n.max(1))
    }
}

/// Picks a node for a read: the primary when the preference says so (and it can take
/// queries), else an eligible replica by rule 2.
pub(crate) fn select<C: Candidate>(
    primary: &C,
    replicas: &[C],
    req: &ReadRequest<'_>,
    default: ReadPreference,
    rng: &mut impl Rng,
) -> Result<Pick, NoNode> {
    let primary_usable = !matches!(primary.state(), NodeState::Down | NodeState::Draining);
    let primary_in_region = req.region.is_none_or(|r| primary.region() == Some(r));
    let mut replica = || pick_replica(replicas, req, rng);
    match req.preference.unwrap_or(default) {
        ReadPreference::Primary => Ok(Pick::Primary),
        ReadPreference::PrimaryPreferred if primary_usable && primary_in_region => Ok(Pick::Primary),
        ReadPreference::PrimaryPreferred => replica().map(Pick::Replica).ok_or(NoNode::NoEligibleReplica),
        ReadPreference::Replica => replica().map(Pick::Replica).ok_or(NoNode::NoEligibleReplica),
        ReadPreference::Nearest => {
            let best = eligible(replicas, req).min_by_key(|&i| replicas[i].rtt());
            match best {
                Some(i) if !(primary_usable && primary_in_region) || replicas[i].rtt() <= primary.rtt() => {
                    Ok(Pick::Replica(i))
                }
                _ if primary_usable && primary_in_region => Ok(Pick::Primary),
                _ => Err(NoNode::NoEligibleReplica),
            }
        }
        // Replicas first, the primary as fallback.
        ReadPreference::ReplicaPreferred => match replica() {
            Some(i) => Ok(Pick::Replica(i)),
            None if primary_in_region => Ok(Pick::FallbackPrimary),
            None => Err(NoNode::NoEligibleReplica),
        },
    }
}

fn eligible<'a, C: Candidate>(replicas: &'a [C], req: &'a ReadRequest<'_>) -> impl Iterator<Item = usize> + 'a {
    replicas
        .iter()
        .enumerate()
        .filter(move |(_, r)| is_eligible(*r, req))
        .map(|(i, _)| i)
}

pub(crate) fn is_eligible<C: Candidate>(r: &C, req: &ReadRequest<'_>) -> bool {
    r.state().serves_reads()
        && req.region.is_none_or(|want| r.region() == Some(want))
        && req.min_lsn.is_none_or(|lsn| r.replay_lsn() >= lsn)
        && req.max_staleness.is_none_or(|max| r.staleness() <= max)
        && req.max_lag.is_none_or(|max| r.lag() <= max)
        && !req.exclude.iter().any(|id| id.as_str() == r.id())
}

/// The narrowings of rule 2, in order: healthy, preferred region, preferred datacenter.
const NARROWINGS: usize = 3;

fn narrows<C: Candidate>(r: &C, req: &ReadRequest<'_>, step: usize) -> bool {
    match step {
        0 => r.state() == NodeState::Healthy,
        1 => req.preferred_region.is_some_and(|p| r.region() == Some(p)),
        _ => req.preferred_datacenter.is_some_and(|p| r.datacenter() == Some(p)),
    }
}

fn pick_replica<C: Candidate>(replicas: &[C], req: &ReadRequest<'_>, rng: &mut impl Rng) -> Option<usize> {
    let mut active = [false; NARROWINGS];
    let keep = |r: &C, active: &[bool; NARROWINGS]| {
        is_eligible(r, req) && (0..NARROWINGS).all(|step| !active[step] || narrows(r, req, step))
    };
    if !replicas.iter().any(|r| keep(r, &active)) {
        return None;
    }
    // A narrowing that would leave nobody is skipped.
    for step in 0..NARROWINGS {
        active[step] = true;
        if !replicas.iter().any(|r| keep(r, &active)) {
            active[step] = false;
        }
    }
    let filters = active;
    // Weighted draw among the kept replicas, optionally without one of them.
    let mut draw = |without: Option<usize>| {
        let kept = |&(i, r): &(usize, &C)| Some(i) != without && keep(r, &filters);
        let total: u64 = replicas
            .iter()
            .enumerate()
            .filter(kept)
            .map(|(_, r)| u64::from(r.weight()))
            .sum();
        if total == 0 {
            return None;
        }
        let mut point = rng.below(total);
        replicas.iter().enumerate().filter(kept).find_map(|(i, r)| {
            let w = u64::from(r.weight());
            if point < w {
                Some(i)
            } else {
                point -= w;
                None
            }
        })
    };
    let first = draw(None)?;
    let Some(second) = draw(Some(first)) else {
        return Some(first);
    };
    Some(if load(&replicas[first]) > 2 * load(&replicas[second]) {
        second
    } else {
        first
    })
}

/// Latency differences below this are noise, not a slow replica: on a busy machine one stalled
/// query moves a sub-millisecond average past 2 ms. Averages are floored here before comparing,
/// so latency only counts once a replica is clearly slow (over 10 ms against a fast one); load
/// differences below that show up as queries in flight.
const LATENCY_FLOOR_US: u128 = 5_000;

/// Latency average (µs, floored) × (queries in flight + 1).
fn load<C: Candidate>(r: &C) -> u128 {
    r.latency().as_micros().max(LATENCY_FLOOR_US) * (u128::from(r.in_flight()) + 1)
}

#[cfg(test)]
mod tests;
