//! Faults of the network itself (issue 14): each node in a network namespace of its own
//! (`LocalClusterBuilder::network_namespaces`), links cut, blackholed or made lossy with nftables
//! while the application works through the handle. Destructive: a cluster per test. Root only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covet_replication::failover::Outcome;
use covet_replication::testing::{Cut, Endpoint, LocalCluster, LocalClusterBuilder};
use covet_replication::{ReplicatedPool, ReplicationConfig};
use covet_tests::{connect, eventually, test_config};

/// Starts `builder`'s cluster in namespaces, with table `t` replayed by every standby.
async fn start(builder: LocalClusterBuilder) -> LocalCluster {
    let cluster = builder.network_namespaces(true).start().await.unwrap();
    cluster
        .execute(0, "CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    cluster
}

fn config(cluster: &LocalCluster) -> ReplicationConfig {
    let mut config = test_config(cluster);
    config.health.timeout = Duration::from_millis(500);
    config
}

/// Which node has the server address a statement reported (every node listens on port 5432).
fn node_at(cluster: &LocalCluster, addr: &str) -> String {
    cluster
        .nodes()
        .into_iter()
        .find(|n| n.host == addr)
        .map(|n| n.name)
        .unwrap_or_else(|| format!("unknown address {addr}"))
}

/// What a load task saw: successes (with the node that served them), failures, latencies.
#[derive(Debug, Default)]
struct Tally {
    ok: Vec<(i64, String, Instant)>,
    failed: Vec<(Instant, String)>,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(mut self, other: Tally) -> Tally {
        self.ok.extend(other.ok);
        self.failed.extend(other.failed);
        self.latencies.extend(other.latencies);
        self
    }

    fn worst(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(l.len() * 99 / 100).copied().unwrap_or_default()
    }
}

/// `tasks` tasks writing (ids `task * 10^9 + n`) or reading through `db` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(db: &ReplicatedPool, tasks: i64, writes: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|task| {
                let (db, stop) = (db.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = task * 1_000_000_000 + n;
                        n += 1;
                        let sql = if writes {
                            "INSERT INTO t VALUES ($1) RETURNING host(inet_server_addr())"
                        } else {
                            "SELECT host(inet_server_addr()) FROM (SELECT $1::bigint) AS x"
                        };
                        let started = Instant::now();
                        let result = sqlx::query_scalar::<_, String>(sql).bind(id).fetch_one(&db).await;
                        tally.latencies.push(started.elapsed());
                        match result {
                            Ok(addr) => tally.ok.push((id, addr, Instant::now())),
                            Err(e) => tally.failed.push((Instant::now(), e.to_string())),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tally
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for t in self.tasks {
            all = all.merge(t.await.unwrap());
        }
        all
    }
}

/// Ids of `ids` present in `t` on node `i` (asked over the harness's own socket).
async fn present(cluster: &LocalCluster, i: usize, ids: &[i64]) -> Vec<i64> {
    let mut conn = cluster.connect(i).await.unwrap();
    sqlx::query_scalar("SELECT id FROM t WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

fn promotions(db: &ReplicatedPool) -> usize {
    db.failover()
        .history()
        .iter()
        .filter(|e| e.outcome == Outcome::Completed && e.new_primary.is_some())
        .count()
}

/// The application loses the primary while the standbys still stream from it: a partition
/// between the application and the database, not a dead primary. Nothing is promoted; writes
/// wait, then fail with an error naming the cause; reads go on on the replicas; after the cut
/// heals, writes go to the same primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_cut_from_the_primary_promotes_nothing_and_reads_go_on() {
    let cluster = start(LocalCluster::builder().replicas(2)).await;
    let mut config = config(&cluster);
    let hold = Duration::from_secs(2);
    config.failover.hold_writes = hold;
    let health = config.health.clone();
    let db = connect(config).await;
    let (writes, reads) = (Load::start(&db, 2, true), Load::start(&db, 4, false));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.cut(Endpoint::App, Endpoint::Node(0), Cut::Blackhole).unwrap();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.heal(Endpoint::App, Endpoint::Node(0)).unwrap();
    let healed = Instant::now();
    // Writes come back to the primary.
    eventually(
        Duration::from_secs(30),
        || "no write through the handle after the cut healed".into(),
        || async {
            sqlx::query("INSERT INTO t VALUES (-1) ON CONFLICT DO NOTHING")
                .execute(&db)
                .await
                .is_ok()
        },
    )
    .await;
    let back = healed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (writes, reads) = (writes.finish().await, reads.finish().await);

    println!(
        "app-primary cut 8 s: {} writes ok, {} failed (worst {:?}), {} reads ok, {} failed (worst {:?}, p99 {:?}), \
         writes back {back:?} after the heal; errors: {:?}",
        writes.ok.len(),
        writes.failed.len(),
        writes.worst(),
        reads.ok.len(),
        reads.failed.len(),
        reads.worst(),
        reads.p99(),
        writes
            .failed
            .iter()
            .map(|(_, e)| e)
            .collect::<std::collections::BTreeSet<_>>(),
    );
    assert_eq!(promotions(&db), 0, "{:#?}", db.failover().history());
    assert!(reads.failed.is_empty(), "{:?}", reads.failed);
    let during = reads.ok.iter().filter(|(_, _, at)| *at > cut && *at < healed).count();
    assert!(during > 100, "reads during the cut: {during}");
    // Every acknowledged write is on the primary, and every one went there.
    let ids: Vec<i64> = writes.ok.iter().map(|(id, ..)| *id).collect();
    assert_eq!(present(&cluster, 0, &ids).await.len(), ids.len());
    assert!(
        writes
            .ok
            .iter()
            .all(|(_, addr, _)| node_at(&cluster, addr) == "primary")
    );
    assert!(
        writes.ok.iter().any(|(_, _, at)| *at > healed),
        "no write after the heal"
    );
    // Those in flight at the cut end with an unknown outcome once health has been unable to
    // reach the primary for `hold`; later ones wait `hold` for it and fail having sent nothing.
    let unknown = writes
        .failed
        .iter()
        .filter(|(_, e)| e.contains("outcome on primary is unknown"))
        .count();
    let unsent = writes
        .failed
        .iter()
        .filter(|(_, e)| e.contains("could not be reached for 2s"))
        .count();
    assert_eq!(unknown + unsent, writes.failed.len(), "{:?}", writes.failed);
    assert!(unknown <= 2, "{unknown} abandoned, more than the writers");
    assert!(unsent >= 2, "{unsent} unsent");
    assert!(writes.failed.iter().all(|(at, _)| *at > cut && *at < healed + hold));
    // No write waited beyond what the configuration says: the primary found down (three
    // checks that time out), then `hold` before a wait for a connection is given up on, and
    // `hold` for a primary after that.
    let bound = (health.interval + health.timeout) * health.failure_threshold + hold * 2 + Duration::from_secs(1);
    assert!(
        writes.worst() < bound,
        "worst write {:?}, bound {bound:?}",
        writes.worst()
    );
}

/// A replica the application can no longer reach, packets dropped without a reset: reads in
/// flight there are abandoned at `routing.read_timeout` and retried elsewhere, new reads leave
/// it once health gives up on it. No read fails; none waits much beyond the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_replica_fails_no_read_and_stalls_none_beyond_the_read_timeout() {
    let cluster = start(LocalCluster::builder().replicas(2)).await;
    let mut config = config(&cluster);
    let read_timeout = Duration::from_millis(500);
    config.routing.read_timeout = Some(read_timeout);
    let db = connect(config).await;
    let reads = Load::start(&db, 8, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.cut(Endpoint::App, Endpoint::Node(1), Cut::Blackhole).unwrap();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healed = Instant::now();
    cluster.heal(Endpoint::App, Endpoint::Node(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads = reads.finish().await;
    let on = |name: &str, from: Instant, to: Instant| {
        reads
            .ok
            .iter()
            .filter(|(_, addr, at)| *at > from && *at < to && node_at(&cluster, addr) == name)
            .count()
    };
    println!(
        "replica1 blackholed 5 s: {} reads ok, {} failed, worst {:?}, p99 {:?}; during the cut {} on replica1, {} on replica2, {} on the primary; timeouts {}",
        reads.ok.len(),
        reads.failed.len(),
        reads.worst(),
        reads.p99(),
        on("replica1", cut + Duration::from_secs(2), healed),
        on("replica2", cut, healed),
        on("primary", cut, healed),
        db.counters().read_timeouts,
    );
    assert!(reads.failed.is_empty(), "{:?}", reads.failed);
    assert!(reads.ok.len() > 500, "{}", reads.ok.len());
    assert!(db.counters().read_timeouts >= 1);
    assert_eq!(on("replica1", cut + Duration::from_secs(2), healed), 0);
}

/// The primary as the handle sees it.
fn primary_id(db: &ReplicatedPool) -> String {
    let nodes = db.manager().nodes();
    let primary = nodes.iter().find(|n| n.role == covet_replication::Role::Primary);
    primary.expect("a primary").id.to_string()
}

/// Every id in `t` on node `i`.
async fn all_ids(cluster: &LocalCluster, i: usize) -> std::collections::BTreeSet<i64> {
    let mut conn = cluster.connect(i).await.unwrap();
    sqlx::query_scalar("SELECT id FROM t")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Nodes that take writes now: a primary, not read-only (asked over the harness's sockets).
async fn writable_nodes(cluster: &LocalCluster) -> Vec<String> {
    let mut writable = Vec::new();
    for n in cluster.nodes() {
        let mut conn = cluster.connect(n.index).await.unwrap();
        let (recovery, read_only): (bool, String) =
            sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if !recovery && read_only == "off" {
            writable.push(n.name);
        }
    }
    writable
}

/// A synchronous cluster whose standbys notice a silent primary in 2 s (`wal_receiver_timeout`),
/// and a handle on it that fails over by itself.
async fn synchronous_cluster() -> (LocalCluster, ReplicatedPool) {
    let cluster = start(
        LocalCluster::builder()
            .replicas(2)
            .synchronous(true)
            .setting("wal_receiver_timeout", "2s"),
    )
    .await;
    let db = connect(config(&cluster)).await;
    (cluster, db)
}

/// The primary cut off from the application and from its standbys, packets dropped: one
/// failover, once the standbys stop streaming from it. Under synchronous replication it
/// acknowledges nothing from the cut on; no write through the handle lands on it, also once
/// the cut heals (it is fenced); nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_synchronous_primary_is_replaced_once_and_acknowledges_nothing() {
    let (cluster, db) = synchronous_cluster().await;
    let writes = Load::start(&db, 2, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.isolate(0, Cut::Blackhole).unwrap();
    let cut = Instant::now();
    eventually(
        Duration::from_secs(30),
        || format!("no failover: {:#?}", db.failover().history()),
        || async { promotions(&db) == 1 },
    )
    .await;
    let promoted_after = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.heal_all().unwrap();
    let healed = Instant::now();
    // The old primary answers again, as a primary on the old timeline: health fences it.
    covet_tests::wait_state(
        &db,
        "primary",
        covet_replication::NodeState::Fenced,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writes.finish().await;

    let new = primary_id(&db);
    let index = cluster.nodes().iter().position(|n| n.name == new).unwrap();
    let (old_rows, new_rows) = (all_ids(&cluster, 0).await, all_ids(&cluster, index).await);
    let acked: Vec<i64> = writes.ok.iter().map(|(id, ..)| *id).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !new_rows.contains(id)).collect();
    let only_on_old: Vec<&i64> = old_rows.difference(&new_rows).collect();
    let from_old_after_cut = writes
        .ok
        .iter()
        .filter(|(_, addr, at)| *at > cut && node_at(&cluster, addr) == "primary")
        .count();
    let after_heal_on_new = writes
        .ok
        .iter()
        .filter(|(_, addr, at)| *at > healed && node_at(&cluster, addr) == new)
        .count();
    println!(
        "primary isolated: promoted {new} {promoted_after:?} after the cut; {} writes acknowledged, {} failed, \
         {} lost, {} rows only on the old primary (never acknowledged), {} acknowledged by it after the cut, \
         {after_heal_on_new} on {new} after the heal; writable at the end: {:?}",
        acked.len(),
        writes.failed.len(),
        lost.len(),
        only_on_old.len(),
        from_old_after_cut,
        writable_nodes(&cluster).await,
    );
    assert_eq!(promotions(&db), 1);
    assert!(lost.is_empty(), "acknowledged, missing on {new}: {lost:?}");
    assert_eq!(from_old_after_cut, 0);
    // What only the old primary has was in flight at the cut (one statement per writer):
    // committed there, never confirmed by a standby, never acknowledged.
    assert!(only_on_old.len() <= 2, "{only_on_old:?}");
    assert!(only_on_old.iter().all(|id| !acked.contains(id)));
    assert!(after_heal_on_new > 10, "{after_heal_on_new}");
    assert_eq!(writable_nodes(&cluster).await, [new]);
}

/// The primary's links go down for 4 s and up for 2 s, six times: at most one failover (a
/// second would need `failover.cooldown`), one writable primary at the end, nothing
/// acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_primary_link_causes_no_failover_storm_and_loses_nothing() {
    let (cluster, db) = synchronous_cluster().await;
    let writes = Load::start(&db, 2, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..6 {
        cluster.isolate(0, Cut::Blackhole).unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.heal_all().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Writes go somewhere again.
    eventually(
        Duration::from_secs(30),
        || "no write after the flapping".into(),
        || async {
            sqlx::query("INSERT INTO t VALUES (-1) ON CONFLICT DO NOTHING")
                .execute(&db)
                .await
                .is_ok()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = writes.finish().await;
    let primary = primary_id(&db);
    let index = cluster.nodes().iter().position(|n| n.name == primary).unwrap();
    let rows = all_ids(&cluster, index).await;
    let acked: Vec<i64> = writes.ok.iter().map(|(id, ..)| *id).collect();
    let lost = acked.iter().filter(|id| !rows.contains(id)).count();
    let writable = writable_nodes(&cluster).await;
    println!(
        "flapping 6 x (4 s down, 2 s up): {} promotions, {} writes acknowledged, {} failed, {lost} lost; writable at the end: {writable:?}",
        promotions(&db),
        acked.len(),
        writes.failed.len(),
    );
    assert!(promotions(&db) <= 1, "{:#?}", db.failover().history());
    assert_eq!(lost, 0);
    assert_eq!(writable, [primary]);
    assert!(acked.len() > 100, "{}", acked.len());
}

/// A lossy link to one replica (5% of packets dropped each way; TCP resends them after at least
/// 200 ms): reads fail no more than elsewhere, and load-aware selection (of two replicas drawn,
/// the one with fewer reads in flight) gives it fewer of them, since its reads stay in flight
/// longer. PostgreSQL's delay emulation (`tc netem`) is not in every kernel (not in this
/// project's CI machines), so loss stands in for a slow link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_move_away_from_a_lossy_replica() {
    let cluster = start(LocalCluster::builder().replicas(2)).await;
    let db = connect(config(&cluster)).await;
    let share = |tally: &Tally| {
        let on = |name: &str| tally.ok.iter().filter(|(_, a, _)| node_at(&cluster, a) == name).count();
        let (r1, r2) = (on("replica1"), on("replica2"));
        (r1, r2, r1 as f64 / (r1 + r2).max(1) as f64)
    };
    let before = Load::start(&db, 8, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = before.finish().await;
    cluster.set_loss(1, 5).unwrap();
    let during = Load::start(&db, 8, false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = during.finish().await;
    cluster.set_loss(1, 0).unwrap();
    let ((b1, b2, bs), (d1, d2, ds)) = (share(&before), share(&during));
    println!(
        "5% loss on replica1: share of replica reads {bs:.3} before ({b1} vs {b2}), {ds:.3} during ({d1} vs {d2}); \
         failed {} before, {} during; worst read {:?} during, p99 {:?}",
        before.failed.len(),
        during.failed.len(),
        during.worst(),
        during.p99(),
    );
    assert!(
        before.failed.is_empty() && during.failed.is_empty(),
        "{:?}",
        during.failed
    );
    // The control: without loss the two replicas share the reads.
    assert!((0.4..0.6).contains(&bs), "{bs}");
    assert!(ds < bs - 0.1, "share {ds:.3} during the loss, {bs:.3} before");
}
