//! The audit trail: what each failover, switchover and fencing did, step by step.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cluster::NodeId;
use crate::control::callbacks::Callbacks;
use crate::core::lock;

/// What started an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailoverKind {
    /// The health loop found the primary down.
    Automatic,
    /// [`FailoverManager::failover`](crate::failover::FailoverManager::failover).
    Manual,
    /// [`FailoverManager::switchover`](crate::failover::FailoverManager::switchover): a planned change of
    /// primary while the old one is up.
    Switchover,
    /// A fenced former primary came back accepting writes and was fenced again.
    Fence,
    /// A standby that missed a failover (it was down) was pointed at the new primary.
    Repoint,
    /// Someone else (another process, an operator) promoted a standby: this process follows.
    Adopt,
    /// An automatic failover an operator approved (`failover.mode = supervised`).
    Approved,
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Done: a new primary takes writes (or the node was fenced).
    Completed,
    /// Stopped by a safety check before anything changed.
    Aborted,
    /// A step failed; `error` says which, and the steps say what had changed before.
    Failed,
}

/// One step of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Step {
    /// `detect`, `survey`, `elect`, `fence`, `catch_up`, `promote`, `switch`, `repoint`, ...
    pub name: &'static str,
    /// The node it acted on, if one.
    pub node: Option<NodeId>,
    /// Time since the event started.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it found or did.
    pub detail: String,
}

/// A failover, switchover or fencing, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FailoverEvent {
    /// Sequence number within this process.
    pub id: u64,
    /// What started it.
    pub kind: FailoverKind,
    /// When it started.
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    /// How long it took.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The primary before.
    pub old_primary: NodeId,
    /// The primary after, once one was promoted.
    pub new_primary: Option<NodeId>,
    /// The new primary's timeline.
    pub timeline: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was aborted or failed.
    pub error: Option<String>,
    /// Standbys now streaming from the new primary.
    pub repointed: Vec<NodeId>,
    /// What it did, in order.
    pub steps: Vec<Step>,
}

/// An event being recorded.
pub(crate) struct Recorder {
    started: Instant,
    event: FailoverEvent,
}

impl Recorder {
    pub fn new(kind: FailoverKind, old_primary: NodeId) -> Self {
        Recorder {
            started: Instant::now(),
            event: FailoverEvent {
                id: 0,
                kind,
                started_at: SystemTime::now(),
                duration: Duration::ZERO,
                old_primary,
                new_primary: None,
                timeline: None,
                outcome: Outcome::Completed,
                error: None,
                repointed: Vec::new(),
                steps: Vec::new(),
            },
        }
    }

    /// Records a step and logs it.
    pub fn step(&mut self, name: &'static str, node: Option<&NodeId>, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let node_name = node.map(NodeId::as_str).unwrap_or("");
        if ok {
            tracing::info!(target: "covet::failover", kind = ?self.event.kind, step = name, node = node_name, "{detail}");
        } else {
            tracing::warn!(target: "covet::failover", kind = ?self.event.kind, step = name, node = node_name, "{detail}");
        }
        self.event.steps.push(Step {
            name,
            node: node.cloned(),
            after: self.started.elapsed(),
            ok,
            detail,
        });
    }

    pub fn kind(&self) -> FailoverKind {
        self.event.kind
    }

    pub fn any_failed(&self) -> bool {
        self.event.steps.iter().any(|s| !s.ok)
    }

    pub fn promoted(&mut self, node: NodeId, timeline: u32) {
        self.event.new_primary = Some(node);
        self.event.timeline = Some(timeline);
    }

    pub fn repointed(&mut self, node: NodeId) {
        self.event.repointed.push(node);
    }

    pub fn repointed_ids(&self) -> &[NodeId] {
        &self.event.repointed
    }

    pub fn finish(mut self, outcome: Outcome, error: Option<String>) -> FailoverEvent {
        self.event.duration = self.started.elapsed();
        self.event.outcome = outcome;
        self.event.error = error;
        self.event
    }
}

/// Events kept in memory for [`FailoverManager::history`](crate::failover::FailoverManager::history).
const HISTORY: usize = 100;

/// Where finished events go: memory, the audit file, the log and the callbacks.
pub(crate) struct AuditLog {
    history: Mutex<VecDeque<FailoverEvent>>,
    /// Held from numbering an event to the end of its append: lines in id order.
    next_id: tokio::sync::Mutex<u64>,
    file: Option<PathBuf>,
    pub callbacks: Callbacks<FailoverEvent>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    pub fn new(file: Option<PathBuf>) -> Self {
        AuditLog {
            history: Mutex::default(),
            next_id: tokio::sync::Mutex::new(1),
            file,
            callbacks: Callbacks::new("covet::failover"),
        }
    }

    /// Numbers and keeps the event, appends it to the audit file, and calls the callbacks.
    pub async fn record(&self, mut event: FailoverEvent) -> FailoverEvent {
        let mut id = self.next_id.lock().await;
        event.id = *id;
        *id += 1;
        let outcome = match event.outcome {
            Outcome::Completed => "completed",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
        };
        let error = event.error.as_deref().unwrap_or("");
        let new_primary = event.new_primary.as_ref().map(NodeId::as_str).unwrap_or("");
        if event.outcome == Outcome::Completed {
            tracing::warn!(target: "covet::failover", id = event.id, kind = ?event.kind, outcome, old_primary = %event.old_primary, new_primary, duration = ?event.duration, "failover event");
        } else {
            tracing::error!(target: "covet::failover", id = event.id, kind = ?event.kind, outcome, old_primary = %event.old_primary, error, duration = ?event.duration, "failover event");
        }
        metrics::counter!("covet_failover_events_total", "outcome" => outcome).increment(1);
        if let Some(path) = &self.file {
            // A file write blocks: off the runtime's worker threads.
            let (path, line) = (path.clone(), event.clone());
            let written = tokio::task::spawn_blocking(move || append_line(&path, &line)).await;
            if let Err(e) = written.map_err(std::io::Error::other).and_then(|r| r) {
                tracing::error!(target: "covet::failover", path = %self.file.as_deref().unwrap_or(std::path::Path::new("")).display(), error = %e, "could not write the audit log");
            }
        }
        drop(id);
        {
            let mut history = lock(&self.history);
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        self.callbacks.emit(&event);
        event
    }

    pub fn history(&self) -> Vec<FailoverEvent> {
        lock(&self.history).iter().cloned().collect()
    }
}

fn append_line(path: &std::path::Path, event: &FailoverEvent) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write per event: appends of a line are not interleaved with another process's.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}
