//! A fleet without an HA manager, coordinated through etcd: a real etcd, a real primary with two
//! synchronous standbys, and three application processes (this test binary run again as
//! `instance`), each writing through its own handle every 10 ms. Each scenario counts
//! promotions (timelines and the instances' events), primaries at the end, writes that landed
//! on a node that was not the primary, acknowledged writes lost, and how long after the new
//! primary first answered as one each instance wrote to it.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use covet_replication::config::EtcdConfig;
use covet_replication::testing::{EtcdServer, LocalCluster};
use covet_replication::{ReplicatedPool, ReplicationConfig};
use covet_tests::{Link, eventually, test_config};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Set in an instance's environment: its name.
const INSTANCE_ENV: &str = "COVET_FLEET_INSTANCE";
/// Its configuration file.
const CONFIG_ENV: &str = "COVET_FLEET_CONFIG";
/// What an instance prints before each JSON line it reports.
const PREFIX: &str = "FLEET ";
const LEASE_TTL: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn report(line: &Value) {
    println!("{PREFIX}{line}");
}

/// The instance: runs only as a child of the scenarios below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an application process of the fleet scenarios, started by them"]
async fn instance() {
    let (Ok(name), Ok(path)) = (std::env::var(INSTANCE_ENV), std::env::var(CONFIG_ENV)) else {
        return;
    };
    let config = ReplicationConfig::from_toml_file(&path).unwrap();
    let db = ReplicatedPool::connect(config).await.unwrap();
    db.failover().register_event_callback(|event| async move {
        report(&json!({ "event": event }));
    });
    // The parent closing our stdin (or dying) ends us, once a failover running here has ended
    // and its event is out.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let status = db.clone();
    tokio::spawn(async move {
        loop {
            report(&json!({ "fleet": status.status().fleet }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for seq in 1i64.. {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let sent = now_ms();
        let written = sqlx::query_scalar::<_, i32>(
            "INSERT INTO fleet (instance, seq) VALUES ($1, $2) RETURNING inet_server_port()",
        )
        .bind(&name)
        .bind(seq)
        .fetch_one(&db)
        .await;
        let line = match written {
            Ok(port) => json!({ "write": seq, "port": port, "sent": sent, "t": now_ms() }),
            Err(e) => json!({ "write": seq, "err": e.to_string(), "sent": sent, "t": now_ms() }),
        };
        report(&line);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    while db.failover().in_progress() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Event callbacks run on tasks of their own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::process::exit(0);
}

/// What one instance reported.
#[derive(Debug, Default)]
struct Seen {
    /// `(seq, port, acknowledged at)` of each acknowledged write.
    acked: Vec<(i64, i32, u64)>,
    failed: Vec<String>,
    events: Vec<Value>,
    leader: bool,
    /// When it last said it leads.
    led_at: Option<u64>,
}

struct Instance {
    name: String,
    child: Child,
    seen: Arc<Mutex<Seen>>,
    _reader: JoinHandle<()>,
}

impl Instance {
    fn start(name: &str, config: &std::path::Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "instance", "--ignored", "--nocapture", "--test-threads=1"])
            .env(INSTANCE_ENV, name)
            .env(CONFIG_ENV, config)
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let into = seen.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(text) = line.strip_prefix(PREFIX) else {
                    continue;
                };
                let v: Value = serde_json::from_str(text).unwrap();
                let mut s = into.lock().unwrap();
                if let Some(seq) = v["write"].as_i64() {
                    match v["port"].as_i64() {
                        Some(port) => s.acked.push((seq, port as i32, v["t"].as_u64().unwrap())),
                        None => s.failed.push(v["err"].as_str().unwrap_or_default().to_owned()),
                    }
                } else if v.get("event").is_some() {
                    s.events.push(v["event"].clone());
                } else if v.get("fleet").is_some() {
                    s.leader = v["fleet"]["leader"].as_bool().unwrap_or(false);
                    if s.leader {
                        s.led_at = Some(now_ms());
                    }
                }
            }
        });
        Instance {
            name: name.to_owned(),
            child,
            seen,
            _reader: reader,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Ends it (its stdin closes) and waits for it.
    async fn stop(mut self) -> (String, Seen) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await;
        let _ = self.child.kill().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self._reader).await;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (self.name, seen)
    }
}

/// A primary and two synchronous standbys (ANY 1), the `fleet` table, and etcd.
struct Fleet {
    cluster: LocalCluster,
    etcd: EtcdServer,
    dir: tempfile::TempDir,
    prefix: String,
}

impl Fleet {
    async fn start(prefix: &str) -> Self {
        let cluster = LocalCluster::builder()
            .replicas(2)
            .synchronous(true)
            .start()
            .await
            .unwrap();
        cluster
            .execute(
                0,
                "CREATE TABLE fleet (instance text, seq bigint, PRIMARY KEY (instance, seq))",
            )
            .await
            .unwrap();
        cluster.wait_streaming().await.unwrap();
        Fleet {
            cluster,
            etcd: EtcdServer::start().await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
            prefix: prefix.to_owned(),
        }
    }

    /// A configuration file for instance `name`, reaching etcd at `etcd_port`.
    fn config(&self, name: &str, etcd_port: u16) -> std::path::PathBuf {
        self.config_with(name, etcd_port, LEASE_TTL, &[])
    }

    /// [`config`](Self::config), with its own lease and standbys it may not promote.
    fn config_with(&self, name: &str, etcd_port: u16, lease_ttl: Duration, exclude: &[&str]) -> std::path::PathBuf {
        let mut config = test_config(&self.cluster);
        config.health.timeout = Duration::from_millis(500);
        config.failover = config.failover.with_exclude(exclude.iter().copied());
        config.etcd = EtcdConfig::default()
            .with_endpoints([format!("http://127.0.0.1:{etcd_port}")])
            .with_prefix(self.prefix.clone())
            .with_lease_ttl(lease_ttl)
            .with_instance(name);
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        path
    }

    /// An instance in `follow` mode with the same `[etcd]`: it watches, never campaigns.
    fn observer(&self, name: &str) -> Instance {
        let path = self.config(name, self.etcd.port());
        let mut config = ReplicationConfig::from_toml_file(&path).unwrap();
        config.failover.mode = covet_replication::config::FailoverMode::Follow;
        std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
        Instance::start(name, &path)
    }

    fn instance(&self, name: &str) -> Instance {
        Instance::start(name, &self.config(name, self.etcd.port()))
    }

    /// The ports of the nodes that answer as primaries, and the timeline of each.
    async fn primaries(&self) -> Vec<(u16, u32)> {
        let mut found = Vec::new();
        for node in self.cluster.nodes() {
            // Not LocalCluster::connect, which waits for a node that is down to come up.
            let options = self.cluster.connect_options(node.index).unwrap();
            let connect = sqlx::PgConnection::connect_with(&options);
            let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
                continue;
            };
            let row: Result<(bool, String), _> = sqlx::query_as(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN '' \
                 ELSE pg_walfile_name(pg_current_wal_lsn()) END",
            )
            .fetch_one(&mut conn)
            .await;
            if let Ok((false, walfile)) = row {
                found.push((node.port, u32::from_str_radix(&walfile[..8], 16).unwrap()));
            }
        }
        found
    }

    /// Waits until a standby answers as a primary: its port, and when (ms since the epoch).
    async fn wait_promoted(&self, old: u16) -> (u16, u64) {
        let started = Instant::now();
        loop {
            if let Some((port, _)) = self.primaries().await.into_iter().find(|(p, _)| *p != old) {
                return (port, now_ms());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "nothing promoted in 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn key(&self, name: &str) -> Option<Value> {
        let key = format!("{}/{name}", self.prefix);
        let text = self.etcd.get(&key).await.unwrap()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// The acknowledged writes missing on the node at `port`.
    async fn lost(&self, port: u16, instances: &[(String, Seen)]) -> usize {
        let node = self.cluster.nodes().into_iter().find(|n| n.port == port).unwrap();
        let mut conn = self.cluster.connect(node.index).await.unwrap();
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT instance, seq FROM fleet")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let present: HashSet<(String, i64)> = rows.into_iter().collect();
        instances
            .iter()
            .flat_map(|(name, s)| s.acked.iter().map(move |(seq, _, _)| (name.clone(), *seq)))
            .filter(|w| !present.contains(w))
            .count()
    }
}

async fn wait_writing(instances: &[&Instance], port: u16, after: u64) {
    for i in instances {
        eventually(
            Duration::from_secs(15),
            || format!("{} never wrote to port {port}: {:?}", i.name, i.seen().failed.last()),
            || async {
                i.seen()
                    .acked
                    .iter()
                    .any(|(_, p, t)| *p == i32::from(port) && *t >= after)
            },
        )
        .await;
    }
}

async fn wait_leader(instances: &[&Instance]) -> String {
    let mut leader = String::new();
    eventually(
        Duration::from_secs(20),
        || "no instance leads the fleet".to_owned(),
        || {
            let leaders: Vec<&str> = instances
                .iter()
                .filter(|i| i.seen().leader)
                .map(|i| i.name.as_str())
                .collect();
            if let [one] = leaders[..] {
                leader = one.to_owned();
            }
            async move { leaders.len() == 1 }
        },
    )
    .await;
    leader
}

/// The steps named `name` in an instance's events, with their outcome.
fn steps_named<'a>(seen: &'a Seen, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    seen.events
        .iter()
        .flat_map(|e| e["steps"].as_array().into_iter().flatten())
        .filter(move |s| s["name"] == name)
}

/// The promotions an instance made (its `promote` steps that succeeded).
fn promotions(seen: &Seen) -> usize {
    steps_named(seen, "promote").filter(|s| s["ok"] == true).count()
}

/// Per instance: how long after `promoted_at` its first write landed on `port`.
fn first_write_after(instances: &[(String, Seen)], port: u16, promoted_at: u64) -> Vec<(String, u64)> {
    instances
        .iter()
        .map(|(name, s)| {
            let first = s
                .acked
                .iter()
                .find(|(_, p, _)| *p == i32::from(port))
                .map(|(_, _, t)| t.saturating_sub(promoted_at))
                .unwrap_or(u64::MAX);
            (name.clone(), first)
        })
        .collect()
}

/// Every acknowledged write went to the old primary before the new one answered as a primary,
/// or to the new one: the count of the others.
fn misplaced(instances: &[(String, Seen)], old: u16, new: u16) -> usize {
    instances
        .iter()
        .flat_map(|(_, s)| &s.acked)
        .filter(|(_, p, _)| *p != i32::from(old) && *p != i32::from(new))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_replaced_once_and_every_instance_writes_to_the_new_one_within_a_second() {
    let fleet = Fleet::start("/covet/kill-primary").await;
    let old = fleet.cluster.nodes()[0].port;
    let (_, timeline) = fleet.primaries().await[0];
    // A `follow` process started first would hold the lease if it campaigned, and never fail
    // over: it only watches.
    let observer = fleet.observer("o1");
    wait_writing(&[&observer], old, 0).await;
    let mut instances: Vec<Instance> = ["i1", "i2", "i3"].iter().map(|n| fleet.instance(n)).collect();
    let all: Vec<&Instance> = instances.iter().collect();
    wait_leader(&all).await;
    wait_writing(&all, old, 0).await;
    instances.push(observer);
    let all: Vec<&Instance> = instances.iter().collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    fleet.cluster.kill(0).await.unwrap();
    let (new, promoted_at) = fleet.wait_promoted(old).await;
    wait_writing(&all, new, promoted_at).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut done = Vec::new();
    for i in instances {
        done.push(i.stop().await);
    }

    assert_eq!(
        fleet.primaries().await,
        vec![(new, timeline + 1)],
        "one promotion, one primary"
    );
    let made: Vec<(&str, usize)> = done.iter().map(|(n, s)| (n.as_str(), promotions(s))).collect();
    assert_eq!(
        made.iter().map(|(_, n)| n).sum::<usize>(),
        1,
        "promotions by instance: {made:?}"
    );
    let (_, observer) = done.iter().find(|(n, _)| n == "o1").unwrap();
    assert_eq!(
        (observer.led_at, promotions(observer)),
        (None, 0),
        "the follow process led"
    );
    let published = fleet.key("primary").await.expect("the new primary is published");
    assert_eq!(published["port"], new);
    assert_eq!(published["timeline"], timeline + 1);
    assert_eq!(fleet.key("failover").await, None, "the promotion under way is cleared");
    assert_eq!(misplaced(&done, old, new), 0);
    assert_eq!(fleet.lost(new, &done).await, 0, "acknowledged writes lost");
    let late = first_write_after(&done, new, promoted_at);
    assert!(
        late.iter().all(|(_, ms)| *ms <= 1000),
        "first write on the new primary, ms after it answered: {late:?}"
    );
    eprintln!("first write on the new primary, ms after it answered: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_killed_mid_failover_is_finished_for_by_another_on_the_node_it_chose() {
    let fleet = Fleet::start("/covet/kill-holder").await;
    let nodes = fleet.cluster.nodes();
    let (old, chosen) = (nodes[0].port, nodes[2].port);
    let (_, timeline) = fleet.primaries().await[0];
    // i1 starts first, so it holds the lease; unlike the others it may not promote replica1, so
    // its choice (replica2) is not the one the others would make (replica1 wins their tie).
    let holder = Instance::start(
        "i1",
        &fleet.config_with("i1", fleet.etcd.port(), LEASE_TTL, &[nodes[1].name.as_str()]),
    );
    assert_eq!(wait_leader(&[&holder]).await, "i1");
    let mut instances = vec![holder, fleet.instance("i2"), fleet.instance("i3")];
    wait_writing(&instances.iter().collect::<Vec<_>>(), old, 0).await;
    assert_eq!(wait_leader(&instances.iter().collect::<Vec<_>>()).await, "i1");

    fleet.cluster.kill(0).await.unwrap();
    // The holder records the promotion in etcd right before pg_promote: kill it then.
    let started = Instant::now();
    let under_way = loop {
        if let Some(p) = fleet.key("failover").await {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the holder began no promotion"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let mut killed = instances.remove(0);
    killed.kill().await;
    drop(killed.stop().await);
    assert_eq!((&under_way["by"], &under_way["port"]), (&json!("i1"), &json!(chosen)));
    let unfinished = fleet.key("failover").await.is_some();
    let promoted_before = fleet.primaries().await.iter().any(|(p, _)| *p == chosen);

    // A survivor takes the lease (after the holder's lapses) and finishes on the holder's node.
    let (new, promoted_at) = fleet.wait_promoted(old).await;
    assert_eq!(new, chosen, "the node the holder began promoting is the one promoted");
    let rest: Vec<&Instance> = instances.iter().collect();
    wait_writing(&rest, new, promoted_at).await;
    // The new holder publishes it (after its own failover, or after adopting the holder's
    // promotion), which clears the record.
    eventually(
        Duration::from_secs(15),
        || "the new primary was never published, or the record never cleared".into(),
        || async {
            fleet.key("primary").await.is_some_and(|p| p["port"] == new) && fleet.key("failover").await.is_none()
        },
    )
    .await;
    let mut done = Vec::new();
    for i in instances {
        done.push(i.stop().await);
    }

    assert_eq!(
        fleet.primaries().await,
        vec![(new, timeline + 1)],
        "still one primary, one promotion"
    );
    let published = fleet.key("primary").await.unwrap();
    if unfinished {
        assert_ne!(published["by"], "i1", "the holder died before publishing");
    }
    let survivors: usize = done.iter().map(|(_, s)| promotions(s)).sum();
    assert!(survivors <= 1, "two promotions by the survivors");
    if survivors == 1 {
        // One finished the holder's promotion, knowingly.
        let (name, finisher) = done.iter().find(|(_, s)| promotions(s) == 1).unwrap();
        let took = steps_named(finisher, "coordinate")
            .any(|s| s["ok"] == true && s["detail"].as_str().unwrap_or_default().contains("began promoting it"));
        assert!(took, "{name} ignored the promotion under way: {:?}", finisher.events);
    }
    assert_eq!(misplaced(&done, old, new), 0);
    assert_eq!(fleet.lost(new, &done).await, 0, "acknowledged writes lost");
    eprintln!(
        "holder killed with the promotion under way (promoted already: {promoted_before}, \
         unpublished: {unfinished}, promotions by survivors: {survivors}); first writes after: {:?}",
        first_write_after(&done, new, promoted_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_from_etcd_never_promotes_even_while_it_believes_it_holds_the_lease() {
    let fleet = Fleet::start("/covet/cut").await;
    let old = fleet.cluster.nodes()[0].port;
    let (_, timeline) = fleet.primaries().await[0];
    // i1 reaches etcd through a link the test cuts; it starts first, so it holds the lease. Its
    // lease is long (9 s: a keep-alive every 3 s), so that once cut right after a keep-alive it
    // goes on believing it holds the lease while it finds the primary gone.
    let link = Link::to(fleet.etcd.port()).await;
    let cut_off = Instance::start("i1", &fleet.config_with("i1", link.port(), Duration::from_secs(9), &[]));
    assert_eq!(wait_leader(&[&cut_off]).await, "i1");
    let others = [fleet.instance("i2"), fleet.instance("i3")];
    let all = [&cut_off, &others[0], &others[1]];
    wait_writing(&all, old, 0).await;
    assert_eq!(wait_leader(&all).await, "i1");

    link.cut_after_next_reply().await;
    let cut_at = now_ms();
    fleet.cluster.kill(0).await.unwrap();
    let (new, promoted_at) = fleet.wait_promoted(old).await;
    wait_writing(&all, new, promoted_at).await;
    let mut done = Vec::new();
    for i in [cut_off].into_iter().chain(others) {
        done.push(i.stop().await);
    }

    assert_eq!(
        fleet.primaries().await,
        vec![(new, timeline + 1)],
        "one promotion, one primary"
    );
    let (_, i1) = &done[0];
    assert_eq!(promotions(i1), 0, "i1 promoted while cut off from etcd");
    // It did try, and etcd's consent is what it lacked: the test would pass vacuously otherwise.
    let refused: Vec<&Value> = steps_named(i1, "coordinate").filter(|s| s["ok"] == false).collect();
    assert!(!refused.is_empty(), "i1 never tried to fail over: {:?}", i1.events);
    assert!(
        i1.led_at.is_some_and(|t| t > cut_at),
        "i1 did not believe it led after the cut"
    );
    let published = fleet.key("primary").await.unwrap();
    assert_ne!(published["by"], "i1");
    let made: usize = done.iter().map(|(_, s)| promotions(s)).sum();
    assert_eq!(made, 1);
    assert_eq!(misplaced(&done, old, new), 0);
    assert_eq!(fleet.lost(new, &done).await, 0, "acknowledged writes lost");
    eprintln!(
        "i1's refused promotions: {}; first writes after: {:?}",
        refused.len(),
        first_write_after(&done, new, promoted_at)
    );
}
