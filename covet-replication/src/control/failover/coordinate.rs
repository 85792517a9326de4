//! `coordinated` mode's part in a failover: the fleet's consent before promoting, the promotion
//! another lease holder left under way, and the decision published after. Outside that mode
//! (or built without the `etcd` feature, which validation then requires) each is a no-op.

use serde::Serialize;

use super::event::Recorder;
use crate::cluster::Node;
use crate::control::Control;
use crate::error::FailoverError;

/// Where this process stands in a fleet coordinated through etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FleetStatus {
    /// This process's name in the election (`etcd.instance`).
    pub instance: String,
    /// Whether it holds the fleet's lease: the one process that fails over.
    pub leader: bool,
    /// In words: who leads, or why etcd cannot be reached.
    pub standing: String,
    /// The primary a lease holder last published (`host:port`) and its timeline.
    pub published_primary: Option<(String, u32)>,
}

/// This process's [`FleetStatus`], in `coordinated` mode.
pub(crate) fn status(m: &Control) -> Option<FleetStatus> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        return Some(FleetStatus {
            instance: fleet.instance().to_owned(),
            leader: fleet.leads(),
            standing: fleet.standing().to_string(),
            published_primary: fleet
                .published()
                .map(|p| (format!("{}:{}", p.host, p.port), p.timeline)),
        });
    }
    let _ = m;
    None
}

/// Whether this process may act on the cluster: outside `coordinated`, always; in it, while it
/// holds the fleet's lease.
pub(super) fn leads(m: &Control) -> bool {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        return fleet.leads();
    }
    let _ = m;
    true
}

/// Why this process may not act for the fleet (`None`: it may).
pub(super) fn refusal(m: &Control) -> Option<FailoverError> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet
        && !fleet.leads()
    {
        return Some(FailoverError::Coordination {
            source: crate::error::HaError::NotLeader {
                standing: fleet.standing().to_string(),
            },
        });
    }
    let _ = m;
    None
}

/// The node a promotion left under way names, if one stands (it may have happened, so no other
/// node may be promoted): its id here, or an error when no node here is at its address. A
/// record older than `promote_timeout` + `lease_ttl`, or of a timeline already left, is over.
pub(super) async fn under_way(m: &Control, rec: &mut Recorder) -> Result<Option<String>, FailoverError> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let p = match fleet.under_way().await {
            Ok(p) => p,
            Err(source) => {
                rec.step("coordinate", None, false, source.to_string());
                return Err(FailoverError::Coordination { source });
            }
        };
        let cfg = &m.cluster.config;
        let stands = cfg.failover.promote_timeout + cfg.etcd.lease_ttl;
        let (_, timeline) = m.cluster.identity.get();
        let Some(p) = p.filter(|p| p.age() < stands && p.timeline >= timeline) else {
            return Ok(None);
        };
        let topology = m.cluster.topology.load();
        let here = topology.nodes().find(|n| {
            n.config.port == p.port
                && crate::config::NodeConfig::host_key(&n.config.host) == crate::config::NodeConfig::host_key(&p.host)
        });
        let Some(node) = here else {
            return Err(FailoverError::PromotionUnderWay {
                node: format!("{}:{}", p.host, p.port),
                left: stands.saturating_sub(p.age()),
                by: p.by,
            });
        };
        rec.step(
            "coordinate",
            Some(&node.id),
            true,
            format!("{} began promoting it: the only candidate", p.by),
        );
        return Ok(Some(node.id.as_str().to_owned()));
    }
    let _ = (m, rec);
    Ok(None)
}

/// Records in etcd, under this process's lease, that `node` is being promoted from
/// `timeline`. Nothing may be promoted unless this succeeds.
pub(super) async fn begin(m: &Control, node: &Node, timeline: u32, rec: &mut Recorder) -> Result<(), FailoverError> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let p = promotion(fleet, node, timeline);
        if let Err(source) = fleet.begin(&p).await {
            rec.step("coordinate", Some(&node.id), false, source.to_string());
            return Err(FailoverError::Coordination { source });
        }
        rec.step(
            "coordinate",
            Some(&node.id),
            true,
            format!("promotion recorded in etcd under {}'s lease", fleet.instance()),
        );
    }
    let _ = (m, node, timeline, rec);
    Ok(())
}

/// Publishes `node`, now primary on `timeline`, for the fleet. A failure is recorded: the
/// others find the new primary by asking the servers, only later.
pub(super) async fn publish(m: &Control, node: &Node, timeline: u32, rec: &mut Recorder) {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let p = promotion(fleet, node, timeline);
        let published = fleet.publish(&p).await;
        rec.step(
            "publish",
            Some(&node.id),
            published.is_ok(),
            published.map_or_else(
                |e| e.to_string(),
                |()| format!("primary on timeline {timeline} published in etcd"),
            ),
        );
    }
    let _ = (m, node, timeline, rec);
}

#[cfg(feature = "etcd")]
fn promotion(fleet: &crate::ha::etcd::Fleet, node: &Node, timeline: u32) -> crate::ha::etcd::Promotion {
    crate::ha::etcd::Promotion::new(
        &node.config.host,
        node.config.port,
        node.id.as_str(),
        timeline,
        fleet.instance(),
    )
}
