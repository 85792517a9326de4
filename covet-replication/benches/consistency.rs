//! What consistency costs, and where reads land under each design, against a LocalCluster.
//!
//! `cargo bench -p covet-replication --features testing --bench consistency`

mod common;

use std::time::{Duration, Instant};

use common::median;
use covet_replication::testing::LocalCluster;
use covet_replication::{Consistency, ReplicatedPool};

const ROUNDS: usize = 9;

/// Mean µs per read of `n` point reads, each in a new read-only session at `level`.
async fn read_only(db: &ReplicatedPool, level: Consistency, n: usize) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let session = db.session_with(level);
        let _: (i32,) = sqlx::query_as("SELECT id FROM bench WHERE id = $1")
            .bind((i % 1000) as i32 + 1)
            .fetch_one(&session)
            .await
            .expect("read");
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Mean µs per cycle of `n` write-then-read cycles, each in a new session at `level`.
async fn write_then_read(db: &ReplicatedPool, level: Consistency, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let session = db.session_with(level);
        let id: i32 = sqlx::query_scalar("INSERT INTO bench_w (v) VALUES (1) RETURNING id")
            .fetch_one(&session)
            .await
            .expect("write");
        // Eventual may miss the row: that is its promise.
        let _: Option<(i32,)> = sqlx::query_as("SELECT v FROM bench_w WHERE id = $1")
            .bind(id)
            .fetch_optional(&session)
            .await
            .expect("read");
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Replica share of reads when `users` concurrent users each write their row, then read it 5
/// times, for `run`: through the plain handle (its watermark is every user's writes) or in one
/// session per request (only the user's own).
async fn replica_share(db: &ReplicatedPool, per_request_sessions: bool, users: usize, run: Duration) -> (f64, u64) {
    let before = db.counters();
    let reads_before = before.to_replica + before.to_primary - before.writes;
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            let db = db.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut reads = 0u64;
                while started.elapsed() < run {
                    let session = db.session();
                    let write = sqlx::query("UPDATE bench_users SET v = v + 1 WHERE id = $1").bind(u as i32);
                    if per_request_sessions {
                        write.execute(&session).await
                    } else {
                        write.execute(&db).await
                    }
                    .expect("write");
                    for _ in 0..5 {
                        let read =
                            sqlx::query_as::<_, (i32,)>("SELECT v FROM bench_users WHERE id = $1").bind(u as i32);
                        if per_request_sessions {
                            read.fetch_one(&session).await
                        } else {
                            read.fetch_one(&db).await
                        }
                        .expect("read");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut reads = 0;
    for t in tasks {
        reads += t.await.expect("user");
    }
    let after = db.counters();
    let routed_reads = after.to_replica + after.to_primary - after.writes - reads_before;
    let on_replica = after.to_replica - before.to_replica;
    (on_replica as f64 / routed_reads.max(1) as f64, reads)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = LocalCluster::builder().replicas(2).start().await.expect("cluster");
        cluster
            .execute(
                0,
                "CREATE TABLE bench (id int PRIMARY KEY); INSERT INTO bench SELECT generate_series(1, 1000);
                 CREATE TABLE bench_w (id serial PRIMARY KEY, v int);
                 CREATE TABLE bench_users (id int PRIMARY KEY, v int); INSERT INTO bench_users SELECT g, 0 FROM generate_series(0, 63) g",
            )
            .await
            .expect("schema");
        cluster.wait_streaming().await.expect("replicated");
        let db = ReplicatedPool::connect(cluster.replication_config()).await.expect("pool");
        read_only(&db, Consistency::Eventual, 500).await; // warm up
        write_then_read(&db, Consistency::Eventual, 100).await;

        let mut ro = [Vec::new(), Vec::new()];
        let mut wr = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let level = [Consistency::Eventual, Consistency::ReadAfterWrite][i];
                ro[i].push(read_only(&db, level, 2_000).await);
                wr[i].push(write_then_read(&db, level, 300).await);
            }
        }
        let [ro_e, ro_r] = ro.map(median);
        let [wr_e, wr_r] = wr.map(median);
        println!("median of {ROUNDS} interleaved runs, 2 standbys, no lag");
        println!("read-only sessions:      eventual {ro_e:7.1} µs/read    read_after_write {ro_r:7.1} µs/read    ratio {:.3}", ro_r / ro_e);
        println!("write-then-read sessions: eventual {wr_e:7.1} µs/cycle   read_after_write {wr_r:7.1} µs/cycle   ratio {:.3}", wr_r / wr_e);

        for users in [1, 8, 32] {
            let (handle, n1) = replica_share(&db, false, users, Duration::from_secs(3)).await;
            let (sessions, n2) = replica_share(&db, true, users, Duration::from_secs(3)).await;
            println!(
                "{users:>2} users writing then reading their own row: replica share of reads: plain handle {:.1}% ({n1} reads), per-request sessions {:.1}% ({n2} reads)",
                handle * 100.0,
                sessions * 100.0
            );
        }
        println!("{:?}", db.consistency_counters());
    });
}
