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

/// What a failover learned of the promotion a lease holder may have left under way.
#[derive(Debug, Default)]
pub(super) struct UnderWay {
    /// The node it names, by its id here: the only one that may be promoted.
    pub target: Option<String>,
    /// Who began it, and how long its record stands.
    pub by: String,
    pub left: std::time::Duration,
    /// The record's revision (0: none): [`begin`] writes only over what was read.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    revision: i64,
}

impl UnderWay {
    /// Refuses a switchover while a promotion stands.
    pub fn refusal(&self) -> Option<FailoverError> {
        self.target.as_ref().map(|node| FailoverError::PromotionUnderWay {
            node: node.clone(),
            by: self.by.clone(),
            left: self.left,
        })
    }
}

/// The promotion a lease holder left under way, if one stands: it may have happened, so no
/// other node may be promoted. An error when no node here is at its address. A record older
/// than twice `promote_timeout` plus `lease_ttl` (by this process's clock: the record has the
/// writer's), or of a timeline the cluster has left, is over.
pub(super) async fn under_way(m: &Control, rec: &mut Recorder) -> Result<UnderWay, FailoverError> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let (p, revision) = match fleet.under_way().await {
            Ok(found) => found,
            Err(source) => {
                rec.step("coordinate", None, false, source.to_string());
                return Err(FailoverError::Coordination { source });
            }
        };
        let cfg = &m.cluster.config;
        let stands = cfg.failover.promote_timeout * 2 + cfg.etcd.lease_ttl;
        let (_, timeline) = m.cluster.identity.get();
        let Some(p) = p.filter(|p| p.age() < stands && p.timeline >= timeline) else {
            return Ok(UnderWay {
                revision,
                ..UnderWay::default()
            });
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
        return Ok(UnderWay {
            target: Some(node.id.as_str().to_owned()),
            left: stands.saturating_sub(p.age()),
            by: p.by,
            revision,
        });
    }
    let _ = (m, rec);
    Ok(UnderWay::default())
}

/// Records in etcd, under this process's lease and over the record `seen` read, that `node`
/// (a standby on `timeline`) is about to be promoted. Nothing may be promoted unless this
/// succeeds.
pub(super) async fn begin(
    m: &Control,
    node: &Node,
    timeline: u32,
    seen: &UnderWay,
    rec: &mut Recorder,
) -> Result<(), FailoverError> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let p = promotion(fleet, node, timeline);
        if let Err(source) = fleet.begin(&p, seen.revision).await {
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
    let _ = (m, node, timeline, seen, rec);
    Ok(())
}

/// Drops the record [`begin`] wrote, for a switchover that stopped before promoting.
pub(super) async fn abandon(m: &Control, rec: &mut Recorder) {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet {
        let dropped = fleet.abandon().await;
        rec.step(
            "coordinate",
            None,
            dropped.is_ok(),
            dropped.map_or_else(|e| e.to_string(), |()| "promotion record dropped".to_owned()),
        );
    }
    let _ = (m, rec);
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

/// The lease holder publishes the primary it follows when etcd names another (one it adopted,
/// one promoted by a holder that died before publishing, the first at startup).
pub(super) async fn reconcile(m: &Control, primary: &Node, sample: Option<&crate::pg::Sample>) {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = &m.fleet
        && fleet.leads()
        && let Some(s) = sample.filter(|s| !s.in_recovery && !s.read_only)
        && let Some(timeline) = s.timeline
    {
        let published = fleet.published();
        let same = published.as_ref().is_some_and(|p| {
            p.port == primary.config.port
                && p.timeline == timeline
                && crate::config::NodeConfig::host_key(&p.host)
                    == crate::config::NodeConfig::host_key(&primary.config.host)
        });
        if !same {
            let p = promotion(fleet, primary, timeline);
            match fleet.publish(&p).await {
                Ok(()) => tracing::info!(target: "covet::fleet", node = %primary.id, timeline, "published the primary"),
                Err(error) => {
                    tracing::warn!(target: "covet::fleet", node = %primary.id, %error, "primary not published")
                }
            }
        }
    }
    let _ = (m, primary, sample);
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
