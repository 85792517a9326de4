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
