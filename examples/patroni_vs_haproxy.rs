//! Time to the first write after Patroni moves the leader: the handle following Patroni's REST
//! API, beside the usual alternative, a plain sqlx pool through HAProxy with `option httpchk
//! GET /primary` at its common `inter 2s fall 3 rise 2`. Both write back to back at once, on a
//! real Patroni cluster (etcd and three members, ttl 10, loop_wait 2). For each trial: when the
//! new leader first accepted writes (polled every 5 ms on connections of their own), and when
//! each path's first write to it was acknowledged; and each path's failed writes.
//!
//! `cargo run --example patroni_vs_haproxy -- [trials per scenario, default 3]` (needs
//! `patroni`, `etcd` and `haproxy` on the PATH).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use covet_replication::testing::PatroniCluster;
use covet_replication::{ReplicatedPool, ReplicationConfig};
use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

/// Acknowledged writes (when, which port) and failures of one writer.
type Tally = (Vec<(Instant, i32)>, usize);

fn writer<E>(db: E, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Tally>
where
    E: Clone + Send + 'static,
    for<'c> &'c E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), 0);
        while !stop.load(Ordering::Relaxed) {
            match sqlx::query_scalar::<_, i32>("INSERT INTO bench VALUES (DEFAULT) RETURNING inet_server_port()")
                .fetch_one(&db)
                .await
            {
                Ok(port) => acked.push((Instant::now(), port)),
                Err(_) => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        (acked, failed)
    })
}

async fn promoted(cluster: &PatroniCluster, old: &str) -> Option<(String, Instant, SystemTime)> {
    let started = Instant::now();
    let candidates: Vec<String> = cluster.names().into_iter().filter(|n| n != old).collect();
    while started.elapsed() < Duration::from_secs(60) {
        for name in &candidates {
            let url = format!(
                "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
                cluster.port(name)
            );
            if let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_millis(200), sqlx::PgConnection::connect(&url)).await
                && let Ok(true) = sqlx::query_scalar::<_, bool>(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                )
                .fetch_one(&mut conn)
                .await
            {
                return Some((name.clone(), Instant::now(), SystemTime::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn first_on(tally: &Tally, port: i32, after: Instant) -> Option<Duration> {
    tally
        .0
        .iter()
        .find(|(_, p)| *p == port)
        .map(|(t, _)| t.saturating_duration_since(after))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

fn haproxy_config(cluster: &PatroniCluster, port: u16) -> String {
    let mut cfg = format!(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30m\n  \
         timeout server 30m\n  timeout check 1s\nlisten primary\n  bind 127.0.0.1:{port}\n  \
         option httpchk GET /primary\n  http-check expect status 200\n  \
         default-server inter 2s fall 3 rise 2 on-marked-down shutdown-sessions\n"
    );
    for name in cluster.names() {
        cfg.push_str(&format!(
            "  server {name} 127.0.0.1:{} check port {}\n",
            cluster.port(&name),
            cluster.api_port(&name)
        ));
    }
    cfg
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let trials: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let cluster = PatroniCluster::start(3).await?;
    let dir = tempfile::tempdir()?;
    let hport = free_port()?;
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, haproxy_config(&cluster, hport))?;
    let mut haproxy = tokio::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    let mut config = ReplicationConfig::from_url(&cluster.url())?;
    config.patroni = cluster.rest_urls();
    let db = ReplicatedPool::connect(config).await?;
    sqlx::query("CREATE TABLE bench (id bigserial PRIMARY KEY)")
        .execute(&db)
        .await?;
    // HAProxy needs `rise` good checks before it sends anything.
    let proxied = loop {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&format!(
                "postgres://postgres@127.0.0.1:{hport}/postgres?sslmode=disable"
            ))
            .await;
        if let Ok(pool) = pool
            && sqlx::query("SELECT 1").execute(&pool).await.is_ok()
        {
            break pool;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    println!(
        "| scenario | trial | handle: first write after the new leader accepted writes (ms) | handle: switched (ms) | handle: failed writes | HAProxy: first write (ms) | HAProxy: failed writes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for scenario in ["switchover", "node loss"] {
        for trial in 1..=trials {
            let leader = cluster.leader().await.ok_or("no leader")?;
            let stop = Arc::new(AtomicBool::new(false));
            let ours = writer(db.clone(), stop.clone());
            let theirs = writer(proxied.clone(), stop.clone());
            tokio::time::sleep(Duration::from_millis(500)).await;
            let watch = {
                let old = leader.clone();
                let cluster = &cluster;
                async move { promoted(cluster, &old).await }
            };
            let act = async {
                if scenario == "switchover" {
                    let candidate = cluster
                        .names()
                        .into_iter()
                        .find(|n| *n != leader)
                        .ok_or("no candidate")?;
                    cluster.switchover(&leader, &candidate).await?;
                } else {
                    cluster.kill(&leader);
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            };
            let (promotion, acted) = tokio::join!(watch, act);
            acted?;
            let (new, at, wall) = promotion.ok_or("no new leader")?;
            // Both get 20 s (HAProxy's worst case here: fall 3 x inter 2s, then rise 2).
            tokio::time::sleep(Duration::from_secs(20)).await;
            stop.store(true, Ordering::Relaxed);
            let (ours, theirs) = (ours.await?, theirs.await?);
            let port = i32::from(cluster.port(&new));
            // When this handle switched its primary (the adopt event), from the same moment.
            let adopted = db
                .failover()
                .history()
                .into_iter()
                .rev()
                .find(|e| e.new_primary.as_ref().is_some_and(|n| n.as_str() == new))
                .map(|e| {
                    let switched = e.started_at + e.duration;
                    switched
                        .duration_since(wall)
                        .map_or_else(|e| -(e.duration().as_secs_f64()), |d| d.as_secs_f64())
                });
            println!(
                "| {scenario} | {trial} | {} | {} | {} | {} | {} |",
                ms(first_on(&ours, port, at)),
                adopted.map_or("-".to_owned(), |s| format!("{:.0}", s * 1e3)),
                ours.1,
                ms(first_on(&theirs, port, at)),
                theirs.1
            );
            if scenario == "node loss" {
                cluster.start_member(&leader)?;
            }
            cluster.wait_formed(Duration::from_secs(90)).await?;
        }
    }
    haproxy.kill().await?;
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
