//! The mixed workload of issue 11: 90% point selects and 10% single-row updates by random key,
//! over 16 tasks; through two raw sqlx pools the caller picks between (writes to the primary,
//! reads to a standby), and through the plain handle at `Eventual` and at its default,
//! `ReadAfterWrite`. Interleaved blocks, per-round ratios, medians; an A/A control (two identical
//! raw pairs). Prints throughput, the replica share of reads and the replay checks per read.
//!
//! `cargo bench -p covet-replication --features testing --bench mixed`

mod common;

use std::time::{Duration, Instant};

use common::{median, pin};
use covet_replication::testing::LocalCluster;
use covet_replication::{Consistency, ReplicatedPool};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const ROWS: usize = 10_000;
const TASKS: usize = 16;
/// Operations per block (all tasks together); each round runs BLOCKS blocks per mode in turn.
const OPS: usize = 1_600;
const BLOCKS: usize = 8;
const ROUNDS: usize = 5;
const READ: &str = "SELECT v FROM bench WHERE id = $1";
const WRITE: &str = "UPDATE bench SET v = v + 1 WHERE id = $1";

#[derive(Clone)]
enum Mode {
    Raw { primary: PgPool, replica: PgPool },
    Ours(ReplicatedPool),
}

impl Mode {
    async fn op(&self, n: usize) {
        let id = (n * 104_729 % ROWS) as i32 + 1;
        let write = n.is_multiple_of(10);
        let result = match (self, write) {
            (Mode::Raw { primary, .. }, true) => sqlx::query(WRITE).bind(id).execute(primary).await.map(drop),
            (Mode::Raw { replica, .. }, false) => sqlx::query(READ).bind(id).execute(replica).await.map(drop),
            (Mode::Ours(db), true) => sqlx::query(WRITE).bind(id).execute(db).await.map(drop),
            (Mode::Ours(db), false) => sqlx::query(READ).bind(id).execute(db).await.map(drop),
        };
        result.expect("operation");
    }
}

/// `ops` operations over TASKS tasks, numbered from `first`; the time they took.
async fn block(mode: &Mode, first: usize, ops: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mode = mode.clone();
            tokio::spawn(async move {
                for i in 0..ops / TASKS {
                    mode.op(first + i * TASKS + t).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    started.elapsed()
}

/// The raw pair, pinging before acquire as the handle's pools do by default: the primary's
/// (sqlx's default), not the standby's.
async fn raw(cluster: &LocalCluster) -> Mode {
    let pool = |node, ping| {
        let options = cluster.connect_options(node).expect("options");
        async move {
            PgPoolOptions::new()
                .max_connections(TASKS as u32)
                .test_before_acquire(ping)
                .connect_with(options)
                .await
                .expect("raw pool")
        }
    };
    Mode::Raw {
        primary: pool(0, true).await,
        replica: pool(1, false).await,
    }
}

async fn ours(cluster: &LocalCluster, level: Consistency) -> Mode {
    let mut config = cluster.replication_config();
    config.consistency.handle = level;
    for node in std::iter::once(&mut config.primary).chain(&mut config.replicas) {
        node.pool.max_connections = TASKS as u32;
    }
    Mode::Ours(ReplicatedPool::connect(config).await.expect("handle"))
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
                    "CREATE TABLE bench (id int PRIMARY KEY, v bigint NOT NULL); \
                     INSERT INTO bench SELECT g, 0 FROM generate_series(1, {ROWS}) g"
                ),
            )
            .await
            .expect("schema");
        cluster.wait_streaming().await.expect("replicated");
        match pin(&cluster) {
            Some(how) => println!("pinned: {how}"),
            None => println!("not pinned (one CPU, or taskset/pgrep missing)"),
        }
        let names = ["raw pair A", "raw pair B", "handle, Eventual", "handle, ReadAfterWrite"];
        let modes = [
            raw(&cluster).await,
            raw(&cluster).await,
            ours(&cluster, Consistency::Eventual).await,
            ours(&cluster, Consistency::ReadAfterWrite).await,
        ];
        for mode in &modes {
            block(mode, 0, OPS).await; // connections, statement caches
        }
        let Mode::Ours(default) = &modes[3] else { unreachable!() };
        let (counters, consistency) = (default.counters(), default.consistency_counters());
        let mut secs: [Vec<f64>; 4] = Default::default();
        let mut next = OPS;
        for round in 0..ROUNDS {
            let mut spent = [Duration::ZERO; 4];
            for b in 0..BLOCKS {
                // The order rotates: drift within a round hits every mode alike.
                for k in 0..4 {
                    let i = (b + round + k) % 4;
                    spent[i] += block(&modes[i], next, OPS).await;
                }
                next += OPS;
            }
            for i in 0..4 {
                secs[i].push(spent[i].as_secs_f64());
            }
        }
        let per_round = (OPS * BLOCKS) as f64;
        println!(
            "{TASKS} tasks, 90% point selects / 10% updates by key, {OPS} operations per block, \
             {BLOCKS} blocks per mode per round in turn, {ROUNDS} rounds"
        );
        for (i, name) in names.iter().enumerate() {
            println!("  {name:<24} {:>8.0} ops/s", per_round / median(secs[i].clone()));
        }
        // Throughput ratio of `a` over `b`, per round, then the median.
        let ratio = |a: usize, b: usize| median((0..ROUNDS).map(|r| secs[b][r] / secs[a][r]).collect());
        println!("  A/A control (raw B / raw A)               {:.3}", ratio(1, 0));
        println!("  handle, Eventual / raw pair A             {:.3}", ratio(2, 0));
        println!("  handle, ReadAfterWrite / raw pair A       {:.3}", ratio(3, 0));
        println!("  handle, ReadAfterWrite / handle, Eventual {:.3}", ratio(3, 2));
        let (after, c) = (default.counters().since(&counters), default.consistency_counters());
        let reads = after.by_class.read.max(1);
        println!(
            "  ReadAfterWrite handle: {:.1}% of {} reads on the replica; {} replay checks ({:.3} per read), \
             {} waits, {} fallbacks to the primary",
            after.to_replica as f64 * 100.0 / reads as f64,
            after.by_class.read,
            c.replay_checks - consistency.replay_checks,
            (c.replay_checks - consistency.replay_checks) as f64 / reads as f64,
            c.waits - consistency.waits,
            c.fallbacks - consistency.fallbacks,
        );
    });
}
