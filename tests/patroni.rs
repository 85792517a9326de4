//! Following Patroni: a real Patroni 3 cluster (etcd, three members over PostgreSQL 15), the
//! handle in its default mode, under a write and a read load. Each scenario counts failed
//! writes, acknowledged writes lost, writes that landed on a node that was not the leader, and
//! the time from the new leader accepting writes to the first write through the handle on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covet_replication::config::FailoverMode;
use covet_replication::failover::{FailoverError, FailoverKind};
use covet_replication::testing::PatroniCluster;
use covet_replication::{Error, ReplicatedPool, ReplicationConfig};
use covet_tests::{Link, eventually};
use sqlx::Connection;

/// An acknowledged write: id, port of the server that took it, when.
type Ack = (i32, i32, Instant);

struct Load {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<(Vec<Ack>, Vec<String>)>,
    reader: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(db: &ReplicatedPool, first_id: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (w, flag) = (db.clone(), stop.clone());
        let writer = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut id = first_id;
            while !flag.load(Ordering::Relaxed) {
                match sqlx::query_scalar::<_, i32>("INSERT INTO pt VALUES ($1) RETURNING inet_server_port()")
                    .bind(id)
                    .fetch_one(&w)
                    .await
                {
                    Ok(port) => acked.push((id, port, Instant::now())),
                    Err(e) => failed.push(e.to_string()),
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, failed)
        });
        let (r, flag) = (db.clone(), stop.clone());
        let reader = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pt")
                    .fetch_one(&r)
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        });
        Load { stop, writer, reader }
    }

    async fn finish(self) -> (Vec<Ack>, Vec<String>, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (acked, failed) = self.writer.await.unwrap();
        let (reads, read_errors) = self.reader.await.unwrap();
        (acked, failed, reads, read_errors)
    }
}

/// When a node of `cluster` other than `old` first answers as a writable primary, polled every
/// 5 ms on connections of its own: the moment the new leader accepts writes.
fn watch_promotion(cluster: &PatroniCluster, old: &str) -> tokio::task::JoinHandle<Option<(String, Instant)>> {
    let candidates: Vec<(String, u16)> = cluster
        .names()
        .into_iter()
        .filter(|n| n != old)
        .map(|n| (n.clone(), cluster.port(&n)))
        .collect();
    tokio::spawn(async move {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            for (name, port) in &candidates {
                let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
                if let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_millis(200), sqlx::PgConnection::connect(&url)).await
                {
                    let writable: Result<bool, _> = sqlx::query_scalar(
                        "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                    )
                    .fetch_one(&mut conn)
                    .await;
                    if writable.unwrap_or(false) {
                        return Some((name.clone(), Instant::now()));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    })
}

async fn present(cluster: &PatroniCluster, name: &str, ids: &[i32]) -> i64 {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port(name)
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pt WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// What one scenario measured.
#[derive(Debug)]
struct Counts {
    acked: usize,
    failed: usize,
    lost: i64,
    on_non_leader: usize,
    reads: usize,
    failed_reads: usize,
    /// From the new leader accepting writes to the first write through the handle on it.
    first_write_after: Option<Duration>,
}

/// Runs the load through `db` while `act` changes the leader from `old`; counts.
async fn measure<F: Future<Output = ()>>(
    cluster: &PatroniCluster,
    db: &ReplicatedPool,
    old: &str,
    first_id: i32,
    act: F,
) -> (Counts, String) {
    let load = Load::start(db, first_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promotion = watch_promotion(cluster, old);
    act.await;
    let (new, promoted_at) = promotion.await.unwrap().expect("a new leader accepted writes");
    eventually(
        Duration::from_secs(20),
        || "no write reached the new leader".to_owned(),
        || async {
            db.explain("INSERT INTO pt VALUES (0)")
                .await
                .is_ok_and(|(n, _)| n.as_str() == new)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed, reads, read_errors) = load.finish().await;
    let new_port = i32::from(cluster.port(&new));
    let old_port = i32::from(cluster.port(old));
    let first_new = acked.iter().position(|(_, p, _)| *p == new_port);
    // Before the first write on the new leader, only the old one; from it on, only the new.
    let on_non_leader = match first_new {
        Some(i) => {
            acked[..i].iter().filter(|(_, p, _)| *p != old_port).count()
                + acked[i..].iter().filter(|(_, p, _)| *p != new_port).count()
        }
        None => acked.len(),
    };
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    let lost = ids.len() as i64 - present(cluster, &new, &ids).await;
    let counts = Counts {
        acked: acked.len(),
        failed: failed.len(),
        lost,
        on_non_leader,
        reads,
        failed_reads: read_errors.len(),
        first_write_after: first_new.map(|i| acked[i].2.saturating_duration_since(promoted_at)),
    };
    if !failed.is_empty() || !read_errors.is_empty() {
        println!(
            "errors: {:?} / {:?}",
            &failed[..failed.len().min(3)],
            &read_errors[..read_errors.len().min(3)]
        );
    }
    (counts, new)
}

fn config(cluster: &PatroniCluster, rest: Vec<String>) -> ReplicationConfig {
    let mut config = ReplicationConfig::from_url(&cluster.url()).unwrap();
    config.patroni = rest;
    config.health.interval = Duration::from_millis(200);
    config.health.timeout = Duration::from_secs(1);
    config.validate().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_follows_patroni_through_switchover_crash_and_node_loss() {
    let cluster = PatroniCluster::start(3).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let db = ReplicatedPool::connect(config(&cluster, cluster.rest_urls()))
        .await
        .unwrap();
    // A second handle whose REST endpoints do not answer: it follows what PostgreSQL says.
    let dead_api = vec!["http://127.0.0.1:9/".to_owned()];
    let blind = ReplicatedPool::connect(config(&cluster, dead_api)).await.unwrap();
    sqlx::query("CREATE TABLE pt (id int PRIMARY KEY)")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        db.explain("INSERT INTO pt VALUES (0)").await.unwrap().0.as_str(),
        leader
    );
    // Given one member's address and the REST API, a handle learns the others from Patroni.
    let one = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port(&leader)
    );
    let mut partial = ReplicationConfig::from_url(&one).unwrap();
    partial.patroni = cluster.rest_urls();
    partial.health.interval = Duration::from_millis(200);
    let partial = ReplicatedPool::connect(partial).await.unwrap();
    let others: Vec<String> = cluster.names().into_iter().filter(|n| *n != leader).collect();
    for name in &others {
        eventually(
            Duration::from_secs(10),
            || format!("{name} not added: {:?}", partial.manager().nodes()),
            || async {
                let target = covet_replication::Target::Node(name.clone());
                sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                    .fetch_one(&partial.using(target))
                    .await
                    .is_ok_and(|port| i32::from(cluster.port(name)) == port)
            },
        )
        .await;
    }
    partial.close().await;
    // Patroni manages the cluster: the default mode follows, and will not act.
    assert_eq!(db.failover().mode(), FailoverMode::Follow);
    let refused = db.failover().switchover(None).await.unwrap_err();
    assert!(
        matches!(refused, Error::Failover(FailoverError::Following { .. })),
        "{refused}"
    );

    // 1. patronictl switchover, with the blind handle writing too.
    let candidate = cluster.names().into_iter().find(|n| *n != leader).unwrap();
    let blind_load = Load::start(&blind, 1_000_000);
    let (counts, new) = measure(&cluster, &db, &leader, 0, async {
        cluster.switchover(&leader, &candidate).await.unwrap();
    })
    .await;
    println!("switchover {leader} -> {new}: {counts:?}");
    assert!(counts.acked > 0 && counts.reads > 0, "{counts:?}");
    assert_eq!(new, candidate);
    // At most the statement in flight when Patroni stops the old leader (57P01): its outcome
    // is unknown, so it is not resent.
    assert!(counts.failed <= 1, "{counts:?}");
    assert_eq!((counts.lost, counts.on_non_leader), (0, 0), "{counts:?}");
    assert!(
        counts.first_write_after.is_some_and(|d| d < Duration::from_secs(1)),
        "{counts:?}"
    );
    eventually(
        Duration::from_secs(20),
        || "the blind handle never followed".to_owned(),
        || async {
            blind
                .explain("INSERT INTO pt VALUES (0)")
                .await
                .is_ok_and(|(n, _)| n.as_str() == new)
        },
    )
    .await;
    let (blind_acked, blind_failed, ..) = blind_load.finish().await;
    println!(
        "blind handle: {} acknowledged, {} failed",
        blind_acked.len(),
        blind_failed.len()
    );
    let blind_ids: Vec<i32> = blind_acked.iter().map(|(id, ..)| *id).collect();
    assert_eq!(
        present(&cluster, &new, &blind_ids).await,
        blind_ids.len() as i64,
        "blind handle lost writes"
    );
    cluster.wait_formed(Duration::from_secs(60)).await.unwrap();

    // 2. The leader's postmaster crashes alone: Patroni restarts it in place; nothing of ours
    // promotes anything.
    let leader = new;
    let before = db.failover().history().len();
    let load = Load::start(&db, 2_000_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.crash_postmaster(&leader);
    cluster.wait_formed(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        cluster.leader().await.as_deref(),
        Some(leader.as_str()),
        "Patroni kept its leader"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed, ..) = load.finish().await;
    println!(
        "postmaster crash: {} acknowledged, {} failed",
        acked.len(),
        failed.len()
    );
    let kinds: Vec<FailoverKind> = db.failover().history()[before..].iter().map(|e| e.kind).collect();
    assert!(
        !kinds.contains(&FailoverKind::Automatic) && !kinds.contains(&FailoverKind::Adopt),
        "{kinds:?}"
    );
    let leader_port = i32::from(cluster.port(&leader));
    assert!(
        acked.iter().all(|(_, p, _)| *p == leader_port),
        "writes stayed on the leader"
    );
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    assert_eq!(
        present(&cluster, &leader, &ids).await,
        ids.len() as i64,
        "no write lost"
    );

    // 3. Node loss: the leader's Patroni and postmaster are killed.
    let (counts, new) = measure(&cluster, &db, &leader, 3_000_000, async {
        cluster.kill(&leader);
    })
    .await;
    println!("node loss {leader} -> {new}: {counts:?}");
    println!("failed: {} writes, {} reads", counts.failed, counts.failed_reads);
    // At most the statement in flight at the kill fails (its outcome is unknown: not resent).
    assert!(counts.failed <= 1, "{counts:?}");
    assert_eq!(counts.on_non_leader, 0, "{counts:?}");
    assert!(
        counts.first_write_after.is_some_and(|d| d < Duration::from_secs(1)),
        "{counts:?}"
    );
    // Its member key expires: the lost node is drained from the topology; back, it is a
    // replica again.
    eventually(
        Duration::from_secs(30),
        || {
            format!(
                "{leader} still in {:?}",
                db.manager()
                    .nodes()
                    .iter()
                    .map(|n| n.id.to_string())
                    .collect::<Vec<_>>()
            )
        },
        || async {
            db.manager().node(&leader).is_none()
                && !db
                    .manager()
                    .nodes()
                    .iter()
                    .any(|n| n.address.contains(&format!(":{}/", cluster.port(&leader))))
        },
    )
    .await;
    cluster.start_member(&leader).unwrap();
    eventually(
        Duration::from_secs(60),
        || format!("{leader} not back: {:?}", db.manager().nodes()),
        || async {
            db.manager()
                .nodes()
                .iter()
                .any(|n| n.id.as_str() == leader && n.role == covet_replication::Role::Replica)
        },
    )
    .await;
    cluster.wait_formed(Duration::from_secs(60)).await.unwrap();

    // 4. patronictl failover, to the member that came back. Patroni may refuse a candidate
    // it does not find healthy yet (patronictl still exits 0; seen once in CI): ask again.
    let old = new;
    let (counts, new) = measure(&cluster, &db, &old, 4_000_000, async {
        for _ in 0..3 {
            cluster.failover(&leader).await.unwrap();
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(15) {
                if cluster.leader().await.as_deref() == Some(leader.as_str()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
    .await;
    println!("patronictl failover {old} -> {new}: {counts:?}");
    assert_eq!(new, leader);
    // At most the statement in flight when Patroni stops the old leader (57P01): its outcome
    // is unknown, so it is not resent.
    assert!(counts.failed <= 1, "{counts:?}");
    assert_eq!((counts.lost, counts.on_non_leader), (0, 0), "{counts:?}");
    // Through all of it, this process promoted, fenced and repointed nothing.
    let ours: Vec<_> = db
        .failover()
        .history()
        .into_iter()
        .filter(|e| {
            e.steps
                .iter()
                .any(|s| matches!(s.name, "promote" | "fence" | "repoint"))
                && e.kind != FailoverKind::Adopt
        })
        .collect();
    assert!(ours.is_empty(), "{ours:#?}");

    // 5. The REST API stops answering mid-run (connections stay open, nothing comes back), then
    // patronictl switchover: the handle follows PostgreSQL's word, its checks unslowed.
    cluster.wait_formed(Duration::from_secs(60)).await.unwrap();
    let mut links = Vec::new();
    for name in cluster.names() {
        links.push(Link::to(cluster.api_port(&name)).await);
    }
    let rest: Vec<String> = links.iter().map(|l| format!("http://127.0.0.1:{}", l.port())).collect();
    let linked = ReplicatedPool::connect(config(&cluster, rest)).await.unwrap();
    let leader = new;
    assert_eq!(
        linked.explain("INSERT INTO pt VALUES (0)").await.unwrap().0.as_str(),
        leader
    );
    for link in &links {
        link.stall(true);
    }
    let candidate = cluster.names().into_iter().find(|n| *n != leader).unwrap();
    let (counts, new) = measure(&cluster, &linked, &leader, 5_000_000, async {
        cluster.switchover(&leader, &candidate).await.unwrap();
    })
    .await;
    println!("switchover {leader} -> {new}, REST API stalled: {counts:?}");
    assert_eq!(new, candidate);
    // At most the statement in flight when Patroni stops the old leader (57P01): its outcome
    // is unknown, so it is not resent.
    assert!(counts.failed <= 1, "{counts:?}");
    assert_eq!((counts.lost, counts.on_non_leader), (0, 0), "{counts:?}");
    assert!(
        counts.first_write_after.is_some_and(|d| d < Duration::from_secs(1)),
        "{counts:?}"
    );
    linked.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_in_synchronous_mode_loses_no_acknowledged_write() {
    let cluster = PatroniCluster::start_with(3, true).await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let db = ReplicatedPool::connect(config(&cluster, cluster.rest_urls()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE pt (id int PRIMARY KEY)")
        .execute(&db)
        .await
        .unwrap();
    let (counts, new) = measure(&cluster, &db, &leader, 0, async {
        cluster.kill(&leader);
    })
    .await;
    println!("synchronous node loss {leader} -> {new}: {counts:?}");
    assert!(counts.acked > 0 && counts.failed <= 1, "{counts:?}");
    assert_eq!((counts.lost, counts.on_non_leader), (0, 0), "{counts:?}");
}
