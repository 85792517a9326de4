//! The failover decision: a pure function of what the surveys found. The runner in `mod.rs`
//! gathers the facts, calls [`plan`], and carries the plan out; every abort is a table test here.

use super::elect::{Candidate, elect};
use super::event::FailoverKind;
use crate::cluster::{NodeId, SyncShortfall};
use crate::config::FailoverConfig;
use crate::core::Lsn;
use crate::error::FailoverError;
use crate::pg::Sample;

/// A standby that may take part, and what its survey found (`None`: it did not answer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standby<'a> {
    pub id: &'a NodeId,
    pub host: &'a str,
    pub port: u16,
    pub survey: Option<&'a Sample>,
}

/// What a failover decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    pub kind: FailoverKind,
    pub target: Option<&'a str>,
    pub standbys: &'a [Standby<'a>],
    /// The cluster's system identifier (0: not known yet).
    pub system_id: u64,
    /// How the primary confirmed commits, as last seen (`None`: asynchronously).
    pub sync: Option<&'a crate::cluster::SyncRule>,
    /// The old primary's last known position.
    pub old_position: Lsn,
    pub config: &'a FailoverConfig,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A standby has left recovery already (another manager promoted it): follow it.
    Adopt(NodeId),
    /// Promote this candidate.
    Promote(Candidate),
}

/// The old primary must really be gone: it answering as a primary aborts.
pub(crate) fn confirm(old: &NodeId, survey: Option<&Sample>) -> Result<(), FailoverError> {
    match survey {
        Some(s) if !s.in_recovery => Err(FailoverError::PrimaryAlive { node: old.clone() }),
        _ => Ok(()),
    }
}

/// Decides a failover once the old primary is confirmed gone.
///
/// # Errors
/// The abort, in the order checked: [`FailoverError::PrimaryStillStreaming`],
/// [`FailoverError::NotEnoughReplicas`], [`FailoverError::SynchronousStandbyMissing`]
/// (automatic failovers only), [`FailoverError::NoCandidate`] /
/// [`FailoverError::TargetNotEligible`], [`FailoverError::DataLoss`].
pub(crate) fn plan(f: &Facts<'_>) -> Result<Plan, FailoverError> {
    let answered: Vec<(&Standby<'_>, &Sample)> = f.standbys.iter().filter_map(|s| Some((s, s.survey?))).collect();
    // One still streaming proves the primary alive, whatever address it streams from (the
    // standbys may reach the primary by another name than we do), unless it is another standby
    // that answered (cascading replication: that one is judged by its own stream).
    let witnesses: Vec<NodeId> = answered
        .iter()
        .filter(|(_, s)| s.streaming() && !answered.iter().any(|(r, _)| s.streams_from(r.host, r.port)))
        .map(|(n, _)| n.id.clone())
        .collect();
    if !witnesses.is_empty() {
        return Err(FailoverError::PrimaryStillStreaming { witnesses });
    }
    let required = f.config.min_replicas.max(1);
    if answered.len() < required {
        return Err(FailoverError::NotEnoughReplicas {
            answered: answered.len(),
            required,
        });
    }
    // Under synchronous replication an acknowledged commit is on k of the standbys the primary
    // names, perhaps only on those: an automatic failover waits until enough of them answer.
    if f.kind == FailoverKind::Automatic
        && let Some(rule) = f.sync
    {
        let heard: Vec<(&str, Option<&str>, bool)> = f
            .standbys
            .iter()
            .map(|s| {
                let name = s.survey.and_then(|s| s.standby_name.as_deref());
                (s.id.as_str(), name, s.survey.is_some())
            })
            .collect();
        if let Some(SyncShortfall { needed, missing }) = rule.shortfall(&heard) {
            return Err(FailoverError::SynchronousStandbyMissing { missing, needed });
        }
    }
    // Another manager may have promoted one already: follow it rather than make a second.
    if let Some((s, _)) = answered
        .iter()
        .find(|(_, s)| !s.in_recovery && (f.system_id == 0 || s.system_id == f.system_id))
    {
        return Ok(Plan::Adopt(s.id.clone()));
    }
    let chosen = choose(&answered, f.target, false, f.system_id, &f.config.exclude)?;
    let loss = f.old_position.0.saturating_sub(chosen.received.0);
    if let Some(limit) = f.config.max_data_loss_bytes
        && loss > limit
    {
        return Err(FailoverError::DataLoss {
            node: chosen.id,
            bytes: loss,
            limit,
        });
    }
    Ok(Plan::Promote(chosen))
}

/// Elects among the standbys that answered; `must_stream` (a switchover) passes over those not
/// streaming from the primary.
///
/// # Errors
/// [`FailoverError::TargetNotEligible`] for a named target, else [`FailoverError::NoCandidate`].
pub(crate) fn choose(
    answered: &[(&Standby<'_>, &Sample)],
    target: Option<&str>,
    must_stream: bool,
    system_id: u64,
    exclude: &[String],
) -> Result<Candidate, FailoverError> {
    let cands: Vec<Candidate> = answered
        .iter()
        .map(|(node, s)| Candidate {
            id: node.id.clone(),
            received: s.position(),
            replayed: s.replayed.unwrap_or(Lsn::ZERO),
            ineligible: ineligible(node.id, s, target, must_stream, system_id, exclude),
        })
        .collect();
    match elect(&cands) {
        Ok(c) => Ok(c.clone()),
        Err(reasons) => Err(match target {
            Some(t) => FailoverError::TargetNotEligible {
                node: t.to_owned(),
                reason: reasons
                    .into_iter()
                    .find(|(id, _)| id.as_str() == t)
                    .map_or_else(|| "not a standby that answered".to_owned(), |(_, r)| r),
            },
            None => FailoverError::NoCandidate { reasons },
        }),
    }
}

/// Why a standby may not be promoted, if it may not.
fn ineligible(
    id: &NodeId,
    s: &Sample,
    target: Option<&str>,
    must_stream: bool,
    system_id: u64,
    exclude: &[String],
) -> Option<String> {
    if !s.in_recovery {
        Some("not a standby".to_owned())
    } else if system_id != 0 && s.system_id != system_id {
        Some(format!(
            "system identifier {} is not the cluster's {system_id}",
            s.system_id
        ))
    } else if exclude.iter().any(|x| x == id.as_str()) {
        Some("excluded by failover.exclude".to_owned())
    } else if target.is_some_and(|t| t != id.as_str()) {
        Some("not the requested target".to_owned())
    } else if must_stream && !s.streaming() {
        Some("not streaming from the primary".to_owned())
    } else {
        None
    }
}

/// A standby that left recovery since the survey (`again`: the surveys right before promoting).
///
/// # Errors
/// [`FailoverError::PromotedElsewhere`].
pub(crate) fn still_unpromoted(ids: &[&NodeId], again: &[Option<Sample>]) -> Result<(), FailoverError> {
    match ids
        .iter()
        .zip(again)
        .find(|(_, s)| s.as_ref().is_some_and(|s| !s.in_recovery))
    {
        Some((id, _)) => Err(FailoverError::PromotedElsewhere { node: (*id).clone() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
