//! The same point-select workload through raw sqlx `PgPool` and through `ReplicatedPool`,
//! against the same replica, in one run; prints latency and throughput ratios.
//!
//! `cargo bench -p covet-replication --features testing --bench end_to_end`

use std::time::Instant;

use covet_replication::testing::LocalCluster;
use covet_replication::{ReadPreference, ReplicatedPool};
use hdrhistogram::Histogram;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const ROWS: i32 = 10_000;
const QUERIES: usize = 6_400;
const ROUNDS: usize = 25;
const POINT: &str = "SELECT id, name FROM bench WHERE id = $1";

#[derive(Clone)]
enum Mode {
    Raw(PgPool),
    Ours(ReplicatedPool),
}

impl Mode {
    async fn point(&self, id: i32) -> (i32, String) {
        let q = sqlx::query_as(POINT).bind(id);
        match self {
            Mode::Raw(pool) => q.fetch_one(pool).await,
            Mode::Ours(db) => q.fetch_one(db).await,
        }
        .expect("point select")
    }
}

/// Runs `queries` point selects over `concurrency` tasks; returns (queries/s, latencies in µs).
async fn run(mode: &Mode, concurrency: usize, queries: usize) -> (f64, Histogram<u64>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mode = mode.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                for i in 0..queries / concurrency {
                    let id = ((t * 7919 + i * 104_729) % ROWS as usize) as i32 + 1;
                    let t0 = Instant::now();
                    let row = mode.point(id).await;
                    h.record(t0.elapsed().as_micros() as u64).expect("record");
                    assert_eq!(row.0, id);
                }
                h
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("task")).expect("merge");
    }
    (queries as f64 / started.elapsed().as_secs_f64(), all)
}

/// Both pools, new: connections made for one round only, so what one set of server backends
/// happens to cost (their CPU placement, caches) does not tilt every round of a run. Which pool
/// connects first alternates too: an A/A run of two identical raw pools measured the
/// first-created one 3.5% slower.
async fn fresh_pools(cluster: &LocalCluster, ours_first: bool) -> [Mode; 2] {
    let raw = || async {
        // ReplicatedPool takes idle replica connections without sqlx's pre-acquire ping (a
        // dead one is retried elsewhere); the raw pool does the same, so the ratio is routing's
        // cost.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(32)
            .connect_with(cluster.connect_options(1).expect("opts"))
            .await
            .expect("raw pool");
        Mode::Raw(pool)
    };
    let ours = || async {
        let mut config = cluster.replication_config();
        config.routing.read_preference = ReadPreference::Replica;
        config.replicas[0].pool.max_connections = 32;
        Mode::Ours(ReplicatedPool::connect(config).await.expect("replicated pool"))
    };
    if ours_first {
        let o = ours().await;
        [raw().await, o]
    } else {
        let r = raw().await;
        [r, ours().await]
    }
}

async fn close(modes: [Mode; 2]) {
    for m in modes {
        match m {
            Mode::Raw(pool) => pool.close().await,
            Mode::Ours(db) => {
                assert_eq!(db.counters().to_primary, 0, "every read went to the replica");
                db.close().await;
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cluster = LocalCluster::builder().replicas(1).start().await.expect("cluster");
        cluster
            .execute(
                0,
                &format!(
                    "CREATE TABLE bench (id int PRIMARY KEY, name text); \
                 INSERT INTO bench SELECT g, 'name ' || g FROM generate_series(1, {ROWS}) g"
                ),
            )
            .await
            .expect("schema");
        cluster.wait_streaming().await.expect("replicated");
        let names = ["raw sqlx PgPool", "ReplicatedPool"];
        println!("{QUERIES} point selects per run, {ROUNDS} rounds of both back to back on fresh pools, same replica");
        for concurrency in [1, 32] {
            let mut tput = [Vec::new(), Vec::new()];
            let mut p50 = [Vec::new(), Vec::new()];
            let mut p99 = [Vec::new(), Vec::new()];
            for round in 0..ROUNDS {
                let modes = fresh_pools(&cluster, round % 4 >= 2).await;
                for m in &modes {
                    run(m, concurrency, QUERIES / 4).await; // connections, statement caches
                }
                // Alternate which goes first so neither always runs on a warmer machine.
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let (qps, h) = run(&modes[i], concurrency, QUERIES).await;
                    tput[i].push(qps);
                    p50[i].push(h.value_at_quantile(0.5) as f64);
                    p99[i].push(h.value_at_quantile(0.99) as f64);
                }
                close(modes).await;
            }
            // Each round runs both back to back: the ratio within a round cancels the machine's
            // drift between rounds; the median over rounds drops the rounds a neighbour disturbed.
            let ratio = |v: &[Vec<f64>; 2], invert: bool| {
                median(
                    v[0].iter()
                        .zip(&v[1])
                        .map(|(raw, ours)| if invert { raw / ours } else { ours / raw })
                        .collect(),
                )
            };
            let (t_ratio, l_ratio, q_ratio) = (ratio(&tput, true), ratio(&p50, false), ratio(&p99, false));
            let [t_raw, t_ours] = tput.map(median);
            let [l_raw, l_ours] = p50.map(median);
            let [q_raw, q_ours] = p99.map(median);
            println!("concurrency {concurrency:>2}:");
            println!(
                "  {:<16} {t_raw:>9.0} q/s  p50 {l_raw:>6.0} µs  p99 {q_raw:>6.0} µs",
                names[0]
            );
            println!(
                "  {:<16} {t_ours:>9.0} q/s  p50 {l_ours:>6.0} µs  p99 {q_ours:>6.0} µs",
                names[1]
            );
            println!(
                "  overhead ratio (ours/raw, median of per-round ratios): throughput {t_ratio:.3}, \
                 p50 latency {l_ratio:.3}, p99 latency {q_ratio:.3}"
            );
        }
    });
}
