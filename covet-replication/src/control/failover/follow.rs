//! Following what happened elsewhere: a promotion made by another process or an operator, a
//! former primary that answers again, standbys a failover could not repoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::Recorder;
use super::run::{connect, repoint, standbys, switch};
use super::{FailoverKind, OldPrimary, Outcome};
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::control::Control;
use crate::core::lock;
use crate::error::PgError;
use crate::pg::{self, Sample};

#[derive(Debug)]
pub(super) struct Straggler {
    id: NodeId,
    next_try: Instant,
    backoff: Duration,
}

/// A replica answered as a writable primary on a newer timeline than the configured primary's
/// (or the configured primary is gone, a standby, or fenced): another process or an operator
/// promoted it. Follow: it becomes the primary, the old one is fenced.
pub(super) async fn adopt(m: &Control, node: &Arc<Node>, timeline: u32, old_state: OldPrimary) -> bool {
    // A failover or switchover of ours running now makes this promotion itself.
    let Ok(_running) = m.failover.running.try_lock() else {
        return false;
    };
    let topology = m.cluster.topology.load_full();
    if !topology.replicas.iter().any(|r| Arc::ptr_eq(r, node)) {
        return false;
    }
    let old = &topology.primary;
    let mut rec = Recorder::new(FailoverKind::Adopt, old.id.clone());
    let detail = match old_state {
        OldPrimary::Writable(old_timeline) => {
            tracing::error!(
                target: "covet::failover",
                old = %old.id, old_timeline, new = %node.id, timeline,
                "two writable nodes: writes go to the one on the higher timeline"
            );
            format!(
                "answers as a primary on timeline {timeline}, and so does {} on timeline {old_timeline}: \
                 two writable nodes; writes go to the higher timeline",
                old.id
            )
        }
        OldPrimary::Follows | OldPrimary::Other => {
            format!("answers as a primary on timeline {timeline}; {} does not", old.id)
        }
    };
    rec.step("adopt", Some(&node.id), true, detail);
    rec.promoted(node.id.clone(), timeline);
    switch(m, old, node, timeline, old_state == OldPrimary::Follows, &mut rec);
    m.failover.audit.record(rec.finish(Outcome::Completed, None)).await;
    true
}

/// Remembers the standbys a failover did not repoint, to repoint them once they answer.
pub(super) fn note_stragglers(m: &Control, topology: &Topology, new: &Node, rec: &Recorder) {
    let now = Instant::now();
    let missed = standbys(topology)
        .into_iter()
        .filter(|n| n.id != new.id && !rec.repointed_ids().contains(&n.id))
        .map(|n| Straggler {
            id: n.id.clone(),
            next_try: now,
            backoff: m.cluster.config.health.interval,
        });
    let mut stragglers = lock(&m.failover.stragglers);
    stragglers.clear();
    stragglers.extend(missed);
}

/// Tries to repoint each straggler that is due; backs off (up to a minute) on failure.
pub(super) async fn repoint_stragglers(m: &Control) {
    let due: Vec<NodeId> = {
        let now = Instant::now();
        let stragglers = lock(&m.failover.stragglers);
        stragglers
            .iter()
            .filter(|s| s.next_try <= now)
            .map(|s| s.id.clone())
            .collect()
    };
    if due.is_empty() {
        return;
    }
    let Ok(_running) = m.failover.running.try_lock() else {
        return;
    };
    let topology = m.cluster.topology.load_full();
    let primary = &topology.primary;
    let timeout = m.cluster.config.health.timeout;
    let (_, timeline) = m.cluster.identity.get();
    for id in due {
        let Some(node) = topology.replicas.iter().find(|n| n.id == id) else {
            lock(&m.failover.stragglers).retain(|s| s.id != id);
            continue;
        };
        let result = repoint(primary, node, timeline, timeout, timeout * 2).await;
        match result {
            Ok(()) => {
                lock(&m.failover.stragglers).retain(|s| s.id != id);
                let mut rec = Recorder::new(FailoverKind::Repoint, primary.id.clone());
                rec.step("repoint", Some(&id), true, format!("streaming from {}", primary.id));
                rec.repointed(id);
                rec.promoted(primary.id.clone(), m.cluster.identity.get().1);
                m.failover.audit.record(rec.finish(Outcome::Completed, None)).await;
            }
            Err(e) => {
                tracing::debug!(target: "covet::failover", node = %id, error = %e, "standby not repointed yet");
                if let Some(s) = lock(&m.failover.stragglers).iter_mut().find(|s| s.id == id) {
                    s.next_try = Instant::now() + s.backoff;
                    s.backoff = (s.backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// A fenced node answered a health check. As a primary it is fenced again (if it takes
/// writes); as a standby of this cluster it becomes a replica again: a new node with a
/// replica's pool (the old one was closed), down until its checks succeed.
pub(super) async fn fenced_node_answered(m: &Control, node: &Arc<Node>, s: &Sample, may_fence: bool) {
    if s.in_recovery {
        let (cluster, _) = m.cluster.identity.get();
        // Only once it streams from the current primary: a former primary restarted as a
        // standby without being rebuilt cannot follow the new timeline and may still hold
        // commits the cluster does not have.
        let primary = m.cluster.primary();
        let follows = s.system_id == cluster && s.streams_from(&primary.config.host, primary.config.port);
        if follows {
            let replica = m.cluster.new_node(&node.config, Role::Replica, NodeState::Down);
            m.cluster.topology.rcu(|t| {
                let mut t = Topology::clone(t);
                for r in &mut t.replicas {
                    if Arc::ptr_eq(r, node) {
                        *r = Arc::clone(&replica);
                    }
                }
                t
            });
            tracing::info!(target: "covet::failover", node = %node.id, "fenced node is a standby again: readmitted as a replica");
        }
        return;
    }
    if s.read_only || !may_fence {
        return;
    }
    let mut rec = Recorder::new(FailoverKind::Fence, node.id.clone());
    let result = async {
        let mut conn = connect(node, m.cluster.config.health.timeout).await?;
        let sample = pg::check(&mut conn).await.map_err(|source| PgError::Query {
            what: "read_only",
            source,
        })?;
        if sample.read_only {
            return Ok(None);
        }
        pg::fence(&mut conn).await.map(|ended| Some(ended.len()))
    }
    .await;
    match result {
        Ok(None) => return,
        Ok(Some(ended)) => rec.step(
            "fence",
            Some(&node.id),
            true,
            format!("came back as a primary: read-only now, {ended} client sessions ended"),
        ),
        Err(e) => rec.step("fence", Some(&node.id), false, e.to_string()),
    }
    let failed = rec.any_failed();
    m.failover
        .audit
        .record(rec.finish(
            if failed { Outcome::Failed } else { Outcome::Completed },
            failed.then(|| "could not fence a former primary that accepts writes".to_owned()),
        ))
        .await;
}
