//! A fleet's failover decisions, shared through etcd (`coordinated` mode): who may act (an
//! election under a lease), what it is doing (a promotion under way) and what it decided (the
//! primary). etcd does the consensus; this holds a lease and reads and writes three keys.
//!
//! etcd-client does not reconnect by itself, so every lost request ends a *term*: the client
//! is dropped, and a new one connects, takes a new lease and campaigns again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::EtcdConfig;
use crate::core::lock;
use crate::error::HaError;

/// A node being promoted (`<prefix>/failover`, before `pg_promote`) or promoted
/// (`<prefix>/primary`, after). Nodes are named by address: ids are each process's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Promotion {
    pub host: String,
    pub port: u16,
    /// The promoting process's id for it (for people reading etcd).
    pub node: String,
    /// Under way: the timeline being left. Done: the new primary's timeline.
    pub timeline: u32,
    /// The instance that wrote it.
    pub by: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl Promotion {
    pub fn new(host: &str, port: u16, node: &str, timeline: u32, by: &str) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Promotion {
            host: host.to_owned(),
            port,
            node: node.to_owned(),
            timeline,
            by: by.to_owned(),
            at_ms,
        }
    }

    /// How long ago it was written (zero if the clocks disagree).
    pub fn age(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_millis(self.at_ms))
    }
}

/// Where this process stands in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// etcd cannot be reached, or the lease was lost: why.
    Unreachable(String),
    /// Campaigning; the instance that leads, when known.
    Candidate(Option<String>),
    /// Not campaigning (`follow`, or `automatic` off): only following what etcd publishes.
    Observer,
    /// Holding the election key `key` (created at revision `rev`), while the lease lasts: by
    /// this process's clock, until `until`.
    Leader { key: Vec<u8>, rev: i64, until: Instant },
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standing::Unreachable(why) => write!(f, "etcd unreachable ({why})"),
            Standing::Candidate(Some(leader)) => write!(f, "{leader} leads"),
            Standing::Candidate(None) => f.write_str("nobody leads yet"),
            Standing::Observer => f.write_str("does not campaign (follow mode, or automatic failover off)"),
            Standing::Leader { .. } => f.write_str("this process leads"),
        }
    }
}

/// This process's member of the fleet.
pub(crate) struct Fleet {
    config: EtcdConfig,
    instance: String,
    /// Per request.
    timeout: Duration,
    /// The current term's client, and its lease.
    client: Mutex<Option<(Client, i64)>>,
    standing: watch::Sender<Standing>,
    /// The last primary published, as the watch saw it.
    primary: watch::Sender<Option<Promotion>>,
    /// etcd refused a guarded write: the election key is gone, whatever the lease says.
    deposed: tokio::sync::Notify,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("instance", &self.instance)
            .field("prefix", &self.config.prefix)
            .field("standing", &*self.standing.borrow())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// `timeout` bounds each request, to at most a quarter of the lease (a holder keeps a
    /// request's time to spare before its lease ends).
    pub fn new(config: &EtcdConfig, timeout: Duration) -> Self {
        let instance = config.instance.clone().unwrap_or_else(default_instance);
        Fleet {
            config: config.clone(),
            instance,
            timeout: timeout.min(config.lease_ttl / 4),
            client: Mutex::new(None),
            standing: watch::Sender::new(Standing::Unreachable("not connected yet".into())),
            primary: watch::Sender::new(None),
            deposed: tokio::sync::Notify::new(),
        }
    }

    /// This process will not campaign.
    pub fn observe_only(&self) {
        self.standing.send_replace(Standing::Observer);
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    /// The primary last published in etcd, as the watch saw it.
    pub fn published(&self) -> Option<Promotion> {
        self.primary.borrow().clone()
    }

    /// Whether this process holds the lease, with a request's time to spare.
    pub fn leads(&self) -> bool {
        self.held().is_ok()
    }

    fn held(&self) -> Result<(Vec<u8>, i64), HaError> {
        match &*self.standing.borrow() {
            Standing::Leader { key, rev, until } if Instant::now() + self.timeout < *until => Ok((key.clone(), *rev)),
            Standing::Leader { .. } => Err(HaError::NotLeader {
                standing: "the lease may lapse before etcd answers".into(),
            }),
            other => Err(HaError::NotLeader {
                standing: other.to_string(),
            }),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.config.prefix)
    }

    fn client(&self) -> Result<Client, HaError> {
        lock(&self.client)
            .as_ref()
            .map(|(c, _)| c.clone())
            .ok_or_else(|| HaError::NotLeader {
                standing: self.standing().to_string(),
            })
    }

    async fn ask<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, HaError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(answer) => answer.map_err(|source| HaError::Etcd { op, source }),
            Err(_) => Err(HaError::Timeout {
                op,
                after: self.timeout,
            }),
        }
    }

    /// Runs `ops` if this process still holds the election key (checked by etcd in the same
    /// transaction) and `also` holds. A refusal ends the term.
    async fn guarded(&self, op: &'static str, also: Vec<Compare>, ops: Vec<TxnOp>) -> Result<(), HaError> {
        let (leader, rev) = self.held()?;
        let mut client = self.client()?;
        let mut when = vec![Compare::create_revision(leader.clone(), CompareOp::Equal, rev)];
        when.extend(also);
        let answer = self.ask(op, client.txn(Txn::new().when(when).and_then(ops))).await?;
        if !answer.succeeded() {
            // Which comparison failed: the election key's means this process leads no more.
            let key = self.ask("read the election key", client.get(leader, None)).await;
            let ours = key.is_ok_and(|k| k.kvs().first().is_some_and(|kv| kv.create_revision() == rev));
            if !ours {
                self.deposed.notify_one();
                return Err(HaError::NotLeader {
                    standing: "etcd refused: this process's election key is gone".into(),
                });
            }
            return Err(HaError::NotLeader {
                standing: "etcd refused: another holder recorded a promotion meanwhile".into(),
            });
        }
        // The answer may have taken long: the lease must still stand now.
        self.held().map(drop)
    }

    fn put(&self, name: &str, p: &Promotion) -> Result<TxnOp, HaError> {
        let key = self.key(name);
        let json = serde_json::to_string(p).map_err(|source| HaError::Record {
            key: key.clone(),
            source,
        })?;
        Ok(TxnOp::put(key, json, None))
    }

    /// Records, under the lease, that `p` is about to be promoted, if the record is as read
    /// (`seen`: its revision, 0 for none). Nothing may be promoted unless this succeeds.
    pub async fn begin(&self, p: &Promotion, seen: i64) -> Result<(), HaError> {
        let unchanged = Compare::mod_revision(self.key("failover"), CompareOp::Equal, seen);
        self.guarded("record the promotion", vec![unchanged], vec![self.put("failover", p)?])
            .await
    }

    /// Drops the record of a promotion this process began and will not make (a switchover
    /// that stopped before `pg_promote`).
    pub async fn abandon(&self) -> Result<(), HaError> {
        let record = TxnOp::delete(self.key("failover"), None);
        self.guarded("drop the promotion", Vec::new(), vec![record]).await
    }

    /// Publishes the new primary (and clears the promotion under way).
    pub async fn publish(&self, p: &Promotion) -> Result<(), HaError> {
        let ops = vec![self.put("primary", p)?, TxnOp::delete(self.key("failover"), None)];
        self.guarded("publish the primary", Vec::new(), ops).await
    }

    /// The promotion a lease holder began and did not finish, if any, and the record's
    /// revision (0: none), for [`begin`](Self::begin).
    pub async fn under_way(&self) -> Result<(Option<Promotion>, i64), HaError> {
        let mut client = self.client()?;
        let key = self.key("failover");
        let answer = self
            .ask("read the promotion under way", client.get(key.as_str(), None))
            .await?;
        let Some(kv) = answer.kvs().first() else {
            return Ok((None, 0));
        };
        let p = serde_json::from_slice(kv.value()).map_err(|source| HaError::Record { key, source })?;
        Ok((Some(p), kv.mod_revision()))
    }

    /// One term: connect, take a lease, campaign, and keep the lease alive until something
    /// fails. Returns why it ended.
    async fn term(&self) -> Result<(), HaError> {
        // No client-wide timeout: the campaign waits as long as another holds the lease; every
        // other request has its own (`ask`).
        let options = ConnectOptions::new().with_connect_timeout(self.timeout);
        let mut client = self
            .ask("connect", Client::connect(&self.config.endpoints, Some(options)))
            .await?;
        let granted = Instant::now();
        let secs = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = self.ask("lease grant", client.lease_grant(secs, None)).await?;
        // etcd may grant more than asked (its minimum).
        let ttl = Duration::from_secs(grant.ttl().unsigned_abs());
        let lease = grant.id();
        *lock(&self.client) = Some((client.clone(), lease));
        let (mut keeper, mut replies) = self.ask("lease keep-alive", client.lease_keep_alive(lease)).await?;
        let mut until = granted + ttl;
        let name = self.key("leader");
        let mut election = client.election_client();
        let campaign = election.campaign(name.as_str(), self.instance.as_str(), lease);
        tokio::pin!(campaign);
        let mut elected = false;
        let mut tick = tokio::time::interval(ttl / 3);
        loop {
            tokio::select! {
                () = self.deposed.notified() => {
                    return Err(HaError::NotLeader { standing: "etcd refused a write under the lease".into() });
                }
                won = &mut campaign, if !elected => {
                    let won = won.map_err(|source| HaError::Etcd { op: "campaign", source })?;
                    let key = won.leader().ok_or_else(|| HaError::NotLeader {
                        standing: "etcd answered the campaign without a key".into(),
                    })?;
                    elected = true;
                    tracing::info!(target: "covet::fleet", instance = %self.instance, "leads the fleet");
                    self.standing.send_replace(Standing::Leader { key: key.key().to_vec(), rev: key.rev(), until });
                }
                _ = tick.tick() => {
                    let sent = Instant::now();
                    self.ask("lease keep-alive", keeper.keep_alive()).await?;
                    let reply = self.ask("lease keep-alive", replies.message()).await?;
                    match reply {
                        Some(r) if r.ttl() > 0 => until = sent + Duration::from_secs(r.ttl().unsigned_abs()),
                        _ => return Err(HaError::NotLeader { standing: "the lease expired".into() }),
                    }
                    if elected {
                        self.standing.send_modify(|s| if let Standing::Leader { until: u, .. } = s { *u = until });
                    } else {
                        let leader = self.ask("leader", client.leader(name.as_str())).await.ok();
                        let leader = leader.and_then(|r| r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()));
                        self.standing.send_if_modified(|s| {
                            let new = Standing::Candidate(leader);
                            (*s != new).then(|| *s = new).is_some()
                        });
                    }
                }
            }
        }
    }

    /// Ends the term's lease (best effort: one etcd cannot be asked lets it lapse), so that its
    /// election key does not stand in the next holder's way for a whole TTL.
    async fn revoke(&self) {
        let term = lock(&self.client).take();
        if let Some((mut client, lease)) = term {
            let _ = self.ask("lease revoke", client.lease_revoke(lease)).await;
        }
    }

    /// Follows `<prefix>/primary`: its value now, then every change, until a request fails.
    async fn follow(&self, wake: &(dyn Fn() + Send + Sync)) -> Result<(), HaError> {
        // HTTP/2 pings find a half-open connection; a member cut off from etcd's quorum
        // refuses the watch instead of keeping it silent.
        let options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_keep_alive(self.config.lease_ttl / 2, self.timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let mut client = self
            .ask("connect", Client::connect(&self.config.endpoints, Some(options)))
            .await?;
        let key = self.key("primary");
        let now = self.ask("read the primary", client.get(key.as_str(), None)).await?;
        let revision = now.header().map_or(0, |h| h.revision());
        self.seen(&key, now.kvs().first().map(|kv| kv.value()), wake);
        let start = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = self.ask("watch", client.watch(key.as_str(), Some(start))).await?;
        while let Some(answer) = stream
            .message()
            .await
            .map_err(|source| HaError::Etcd { op: "watch", source })?
        {
            if answer.canceled() {
                // Compacted past our revision, or refused: read it afresh.
                return Err(HaError::NotLeader {
                    standing: format!("etcd canceled the watch ({})", answer.cancel_reason()),
                });
            }
            for event in answer.events() {
                let value = (event.event_type() == EventType::Put)
                    .then(|| event.kv().map(|kv| kv.value()))
                    .flatten();
                self.seen(&key, value, wake);
            }
        }
        Err(HaError::NotLeader {
            standing: "etcd ended the watch".into(),
        })
    }

    fn seen(&self, key: &str, value: Option<&[u8]>, wake: &(dyn Fn() + Send + Sync)) {
        let parsed = value.map(serde_json::from_slice::<Promotion>).transpose();
        match parsed {
            Ok(p) => {
                if self
                    .primary
                    .send_if_modified(|now| (*now != p).then(|| *now = p.clone()).is_some())
                {
                    tracing::info!(target: "covet::fleet", primary = ?p, "etcd published a primary");
                    wake();
                }
            }
            Err(error) => tracing::warn!(target: "covet::fleet", key, %error, "not a primary this library wrote"),
        }
    }
}

/// The leadership task: terms, one after another, with a pause between.
pub(crate) async fn lead(fleet: Arc<Fleet>, token: CancellationToken) {
    let pause = fleet.config.lease_ttl / 4;
    loop {
        let ended = tokio::select! {
            _ = token.cancelled() => break,
            ended = fleet.term() => ended,
        };
        let why = ended
            .err()
            .map_or_else(|| "the term ended".to_owned(), |e| e.to_string());
        tracing::warn!(target: "covet::fleet", instance = %fleet.instance, %why, "lost etcd");
        fleet.standing.send_replace(Standing::Unreachable(why));
        fleet.revoke().await;
        tokio::select! {
            _ = token.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    // On a clean stop, give the lease up: another process need not wait out its TTL.
    fleet.standing.send_replace(Standing::Unreachable("stopped".into()));
    fleet.revoke().await;
}

/// The watch task: follows the published primary, calling `wake` on each change.
pub(crate) async fn watch_primary(fleet: Arc<Fleet>, wake: impl Fn() + Send + Sync, token: CancellationToken) {
    let pause = fleet.config.lease_ttl / 4;
    loop {
        let ended = tokio::select! {
            _ = token.cancelled() => break,
            ended = fleet.follow(&wake) => ended,
        };
        if let Err(error) = ended {
            tracing::debug!(target: "covet::fleet", %error, "watch of the primary ended");
        }
        tokio::select! {
            _ = token.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
