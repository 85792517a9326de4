//! The same point-select workload through raw sqlx `PgPool` and through `ReplicatedPool`,
//! against the same replica, in one run; prints latency and throughput ratios.
//!
//! `cargo bench -p covet-replication --features testing --bench end_to_end`

mod common;

use std::time::{Duration, Instant};

use common::{median, pin};
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

/// Runs `queries` point selects over `concurrency` tasks into `h`; returns the elapsed time.
async fn run(mode: &Mode, concurrency: usize, queries: usize, offset: usize, h: &mut Histogram<u64>) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mode = mode.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                for i in 0..queries / concurrency {
                    let id = ((t * 7919 + (offset + i) * 104_729) % ROWS as usize) as i32 + 1;
                    let t0 = Instant::now();
                    let row = mode.point(id).await;
                    h.record(t0.elapsed().as_nanos() as u64).expect("record");
                    assert_eq!(row.0, id);
                }
                h
            })
        })
        .collect();
    for t in tasks {
        h.add(t.await.expect("task")).expect("merge");
    }
    started.elapsed()
}

fn raw_pool(cluster: &LocalCluster) -> impl Future<Output = Mode> {
    // ReplicatedPool takes idle replica connections without sqlx's pre-acquire ping (a dead one
    // is retried elsewhere); the raw pool does the same, so the ratio is routing's cost.
    let options = cluster.connect_options(1).expect("opts");
    async move {
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(32)
            .connect_with(options)
            .await
            .expect("raw pool");
        Mode::Raw(pool)
    }
}

async fn our_pool(cluster: &LocalCluster) -> Mode {
    let mut config = cluster.replication_config();
    config.routing.read_preference = ReadPreference::Replica;
    config.replicas[0].pool.max_connections = 32;
    Mode::Ours(ReplicatedPool::connect(config).await.expect("replicated pool"))
}

/// The three pools (two raw, ours), new each round: what one set of server backends happens to
/// cost (their memory, caches) does not tilt every round of a run. The order they connect in
/// rotates too.
async fn fresh_pools(cluster: &LocalCluster, round: usize) -> [Mode; 3] {
    let mut made: [Option<Mode>; 3] = [None, None, None];
    for k in 0..3 {
        let i = (round + k) % 3;
        made[i] = Some(if i == OURS {
            our_pool(cluster).await
        } else {
            raw_pool(cluster).await
        });
    }
    made.map(|m| m.expect("made"))
}

async fn close(modes: [Mode; 3]) {
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

const RAW_A: usize = 0;
const RAW_B: usize = 1;
const OURS: usize = 2;
/// Each round's queries per pool run in this many blocks, the pools taking turns.
const BLOCKS: usize = 16;

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
        match pin(&cluster) {
            Some(how) => println!("pinned: {how}"),
            None => println!("not pinned (one CPU, or taskset/pgrep missing)"),
        }
        println!(
            "{QUERIES} point selects per pool per round in {BLOCKS} interleaved blocks, {ROUNDS} rounds, \
             fresh pools each round, same replica; raw A and raw B are two identical raw sqlx pools \
             (the A/A line shows what this machine can resolve)"
        );
        for concurrency in [1, 32] {
            let mut secs: [Vec<f64>; 3] = Default::default();
            let mut p50: [Vec<f64>; 3] = Default::default();
            let mut p99: [Vec<f64>; 3] = Default::default();
            for round in 0..ROUNDS {
                let modes = fresh_pools(&cluster, round).await;
                let mut hist: [Histogram<u64>; 3] = std::array::from_fn(|_| Histogram::new(3).expect("histogram"));
                let mut spent = [Duration::ZERO; 3];
                for m in &modes {
                    let mut warm = Histogram::new(3).expect("histogram");
                    run(m, concurrency, QUERIES / 4, 0, &mut warm).await; // connections, statement caches
                }
                // Short blocks in turn, the order rotating: drift within the round hits all three.
                let per_block = QUERIES / BLOCKS;
                for block in 0..BLOCKS {
                    for k in 0..3 {
                        let i = (block + round + k) % 3;
                        spent[i] += run(&modes[i], concurrency, per_block, block * per_block, &mut hist[i]).await;
                    }
                }
                for i in 0..3 {
                    secs[i].push(spent[i].as_secs_f64());
                    p50[i].push(hist[i].value_at_quantile(0.5) as f64 / 1000.0);
                    p99[i].push(hist[i].value_at_quantile(0.99) as f64 / 1000.0);
                }
                close(modes).await;
            }
            // Per-round ratios cancel the machine's drift between rounds; the median over rounds
            // drops the rounds a neighbour disturbed. Ours is compared with the mean of both raw
            // pools, A with B.
            let ratio = |v: &[Vec<f64>; 3], i: usize| {
                median(
                    (0..ROUNDS)
                        .map(|r| {
                            let raw = if i == OURS {
                                (v[RAW_A][r] + v[RAW_B][r]) / 2.0
                            } else {
                                v[RAW_A][r]
                            };
                            v[i][r] / raw
                        })
                        .collect(),
                )
            };
            println!("concurrency {concurrency:>2}:");
            for (i, name) in [(RAW_A, "raw sqlx A"), (RAW_B, "raw sqlx B"), (OURS, "ReplicatedPool")] {
                println!(
                    "  {name:<15} {:>8.0} q/s  p50 {:>6.1} µs  p99 {:>6.1} µs",
                    QUERIES as f64 / median(secs[i].clone()),
                    median(p50[i].clone()),
                    median(p99[i].clone())
                );
            }
            for (i, label) in [
                (RAW_B, "A/A control (raw B / raw A)"),
                (OURS, "overhead (ours / mean of raw)"),
            ] {
                println!(
                    "  {label:<30} time {:.3}  p50 latency {:.3}  p99 latency {:.3}",
                    ratio(&secs, i),
                    ratio(&p50, i),
                    ratio(&p99, i)
                );
            }
        }
    });
}
