//! `cargo run --example failover`: the primary crashes under a steady write load and the
//! standby with the most WAL takes over. It starts a local cluster of its own (it kills a
//! server, so it never touches a configured one), with synchronous replication, and exits
//! with an error if a single acknowledged write is missing afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covet_replication::testing::LocalCluster;
use covet_replication::{ReplicatedPool, Target, failover::FailoverKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("starting a local cluster: 1 primary + 2 synchronous hot standbys ...");
    let cluster = LocalCluster::builder().replicas(2).synchronous(true).start().await?;
    let mut config = cluster.replication_config();
    config.health.interval = Duration::from_millis(200);
    config.health.timeout = Duration::from_millis(500);
    let db = ReplicatedPool::connect(config).await?;
    sqlx::query("CREATE TABLE events (id int PRIMARY KEY, port int NOT NULL)")
        .execute(&db)
        .await?;
    println!("{}\n", db.status());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0usize);
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                let insert =
                    sqlx::query_scalar::<_, i32>("INSERT INTO events VALUES ($1, inet_server_port()) RETURNING port")
                        .bind(id)
                        .fetch_one(&db)
                        .await;
                match insert {
                    Ok(port) => acked.push((id, port, Instant::now())),
                    Err(_) => failed += 1,
                }
                id += 1;
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("killing the primary (SIGKILL) under write load ...");
    cluster.kill(0).await?;
    let killed = Instant::now();
    let event = loop {
        if let Some(e) = db
            .failover()
            .history()
            .into_iter()
            .find(|e| e.kind == FailoverKind::Automatic)
        {
            break e;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            return Err("no failover within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.await?;

    println!("failover event #{} ({:?}):", event.id, event.outcome);
    for step in &event.steps {
        let node = step.node.as_ref().map_or("", |n| n.as_str());
        println!("  {:>9.1?}  {:<8} {node:<9} {}", step.after, step.name, step.detail);
    }
    let old_port = i32::from(cluster.nodes()[0].port);
    let resumed = acked
        .iter()
        .find(|(_, port, _)| *port != old_port)
        .map(|(_, _, at)| at.duration_since(killed));
    println!(
        "\n{} writes acknowledged, {failed} failed; writes resumed {resumed:?} after the kill",
        acked.len()
    );
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&db.using(Target::Primary))
        .await?;
    println!(
        "acknowledged writes on the new primary: {present} of {} (lost: {})",
        ids.len(),
        ids.len() as i64 - present
    );
    println!("\n{}", db.status());
    if present != ids.len() as i64 {
        return Err("acknowledged writes were lost".into());
    }
    Ok(())
}
