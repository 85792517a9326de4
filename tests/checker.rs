//! The consistency checker (issue 11): writes through every path, each read back through every
//! path, against a primary and two standbys (one 200 ms behind, the other killed half-way),
//! counting stale reads; monotonic sessions against a counter that only grows, counting
//! backwards reads; tokens carried into a second OS process. Each count has a negative control
//! (`Eventual`) that must show violations, or the checker is broken.
//!
//! Quick by default (CI); `COVET_CHECKER_CYCLES=1000` for a full run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use covet_replication::testing::LocalCluster;
use covet_replication::{Consistency, Model, ReplicatedPool, ReplicationConfig, Session, Target, with_target};
use covet_tests::{child_result, connect, test_config};
use futures::StreamExt;

#[derive(Debug, Model)]
#[model(table = "c")]
struct Row {
    #[model(primary_key, default)]
    id: Option<i64>,
    tok: i64,
}

/// Where the statements go: the plain handle (its own session) or an explicit session.
#[derive(Clone, Copy)]
enum Via<'a> {
    Handle(&'a ReplicatedPool),
    Session(&'a Session),
}

/// Runs `$body` with `$e` bound to the handle or the session.
macro_rules! on {
    ($via:expr, |$e:ident| $body:expr) => {
        match $via {
            Via::Handle($e) => $body,
            Via::Session($e) => $body,
        }
    };
}

const WRITES: [&str; 9] = [
    "statement",
    "stream dropped after its first row",
    "error after COMMIT",
    "procedure that commits then raises",
    "volatile function",
    "transaction (begin)",
    "sqlx Acquire",
    "held primary connection",
    "ORM insert",
];

const READS: [&str; 4] = [
    "untargeted",
    "targeted at a replica",
    "with_target",
    "ORM .using(Replica)",
];

fn cycles() -> usize {
    std::env::var("COVET_CHECKER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// Writes row `tok` through `path`; returns a connection to keep while reading (the held
/// primary connection's case).
async fn write(via: Via<'_>, path: &str, tok: i64) -> Option<covet_replication::NodeConnection> {
    match path {
        "statement" => {
            on!(via, |e| sqlx::query("INSERT INTO c (tok) VALUES ($1)")
                .bind(tok)
                .execute(e)
                .await)
            .unwrap();
        }
        "stream dropped after its first row" => {
            let query = sqlx::query_scalar::<_, i64>("INSERT INTO c (tok) VALUES ($1) RETURNING id").bind(tok);
            on!(via, |e| {
                let mut rows = query.fetch(e);
                assert!(rows.next().await.unwrap().is_ok());
            });
        }
        "error after COMMIT" => {
            let sql = format!("INSERT INTO c (tok) VALUES ({tok}); COMMIT; SELECT 1/0");
            let failed = on!(via, |e| sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(e).await);
            assert!(failed.is_err());
        }
        "procedure that commits then raises" => {
            let failed = on!(via, |e| sqlx::query("CALL commit_then_fail($1)")
                .bind(tok)
                .execute(e)
                .await);
            assert!(failed.is_err());
        }
        "volatile function" => {
            on!(via, |e| sqlx::query("SELECT ins($1)").bind(tok).execute(e).await).unwrap();
        }
        "transaction (begin)" => {
            let mut tx = on!(via, |e| e.begin().await).unwrap();
            sqlx::query("INSERT INTO c (tok) VALUES ($1)")
                .bind(tok)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        "sqlx Acquire" => {
            let mut conn = on!(via, |e| sqlx::Acquire::acquire(e).await).unwrap();
            sqlx::query("INSERT INTO c (tok) VALUES ($1)")
                .bind(tok)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        "held primary connection" => {
            let mut conn = on!(via, |e| e.acquire_on(Target::Primary).await).unwrap();
            sqlx::query("INSERT INTO c (tok) VALUES ($1)")
                .bind(tok)
                .execute(&mut *conn)
                .await
                .unwrap();
            return Some(conn);
        }
        "ORM insert" => {
            let mut row = Row { id: None, tok };
            on!(via, |e| row.insert_on(e).await).unwrap();
        }
        other => unreachable!("{other}"),
    }
    None
}

/// Whether row `tok` is seen through `path`; `None` when a replica target was refused because
/// no replica had caught up (the promise kept by saying so, not a stale read).
async fn read(via: Via<'_>, path: &str, tok: i64) -> Option<bool> {
    let exists = "SELECT EXISTS (SELECT 1 FROM c WHERE tok = $1)";
    let seen: Result<bool, sqlx::Error> = match path {
        "untargeted" => on!(via, |e| sqlx::query_scalar(exists).bind(tok).fetch_one(e).await),
        "targeted at a replica" => on!(via, |e| sqlx::query_scalar(exists)
            .bind(tok)
            .fetch_one(&e.using(Target::Replica))
            .await),
        "with_target" => on!(via, |e| with_target(
            Target::Replica,
            sqlx::query_scalar(exists).bind(tok).fetch_one(e)
        )
        .await),
        "ORM .using(Replica)" => on!(via, |e| Row::objects()
            .filter(Row::TOK.eq(tok))
            .using(Target::Replica)
            .exists_on(e)
            .await),
        other => unreachable!("{other}"),
    };
    match seen {
        Ok(seen) => Some(seen),
        Err(e) if refused(&e) => None,
        Err(e) => panic!("{path}: {e}"),
    }
}

/// A replica target refused for want of a replica that has the session's writes.
fn refused(e: &sqlx::Error) -> bool {
    matches!(
        covet_replication::Error::from_sqlx(e),
        Some(
            covet_replication::Error::NotCaughtUp { .. }
                | covet_replication::Error::SessionPositionUnknown { .. }
                | covet_replication::Error::NoEligibleReplica { .. }
        )
    )
}

#[derive(Debug, Default)]
struct Counts {
    reads: usize,
    stale: usize,
    refused: usize,
}

/// Every write path through `via`, each read back through every read path, `cycles` times.
async fn write_then_read(
    via: impl Fn() -> Via<'static> + Copy,
    label: &str,
    tok: &mut i64,
    cycles: usize,
    out: &mut BTreeMap<String, Counts>,
) {
    for _ in 0..cycles {
        for write_path in WRITES {
            *tok += 1;
            let held = write(via(), write_path, *tok).await;
            for read_path in READS {
                let counts = out.entry(format!("{label}: {write_path} -> {read_path}")).or_default();
                counts.reads += 1;
                match read(via(), read_path, *tok).await {
                    Some(true) => {}
                    Some(false) => counts.stale += 1,
                    None => counts.refused += 1,
                }
            }
            drop(held);
        }
    }
}

async fn checker_cluster() -> LocalCluster {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    cluster
        .execute(
            0,
            "CREATE TABLE c (id bigserial PRIMARY KEY, tok bigint NOT NULL); \
             CREATE INDEX ON c (tok); \
             CREATE TABLE counter (id int PRIMARY KEY, v bigint NOT NULL); \
             INSERT INTO counter VALUES (1, 0); \
             CREATE PROCEDURE commit_then_fail(t bigint) LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO c (tok) VALUES (t); COMMIT; RAISE EXCEPTION 'after the commit'; END $$; \
             CREATE FUNCTION ins(t bigint) RETURNS bigint LANGUAGE sql VOLATILE \
               AS 'INSERT INTO c (tok) VALUES (t) RETURNING t'",
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    cluster.set_apply_delay(1, Duration::from_millis(200)).await.unwrap();
    cluster
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_reads_stale_or_backwards_and_the_controls_do() {
    let cycles = cycles();
    let cluster = checker_cluster().await;
    let mut config = test_config(&cluster);
    config.consistency.max_wait = Duration::from_millis(50);
    let db: &'static ReplicatedPool = leak(connect(config.clone()).await);
    let session: &'static Session = leak(db.session());
    let mut eventual_config = config.clone();
    eventual_config.consistency.session = Consistency::Eventual;
    eventual_config.consistency.handle = Consistency::Eventual;
    let eventual: &'static ReplicatedPool = leak(connect(eventual_config).await);

    let (mut tok, mut counts) = (0, BTreeMap::new());
    let half = cycles.div_ceil(2);
    write_then_read(|| Via::Handle(db), "handle", &mut tok, half, &mut counts).await;
    write_then_read(|| Via::Session(session), "session", &mut tok, half, &mut counts).await;
    // The undelayed standby dies: the rest is read on the delayed one, or the primary.
    cluster.kill(2).await.unwrap();
    write_then_read(|| Via::Handle(db), "handle", &mut tok, cycles - half, &mut counts).await;
    write_then_read(
        || Via::Session(session),
        "session",
        &mut tok,
        cycles - half,
        &mut counts,
    )
    .await;
    let mut control = BTreeMap::new();
    write_then_read(|| Via::Handle(eventual), "eventual", &mut tok, cycles, &mut control).await;

    let stale: Vec<String> = counts
        .iter()
        .filter(|(_, c)| c.stale > 0)
        .map(|(k, c)| format!("{k}: {} of {}", c.stale, c.reads))
        .collect();
    let reads: usize = counts.values().map(|c| c.reads).sum();
    let refused: usize = counts.values().map(|c| c.refused).sum();
    let control_stale: usize = control.values().map(|c| c.stale).sum();
    let control_reads: usize = control.values().map(|c| c.reads).sum();
    println!(
        "checker: {} paths x {cycles} cycles, {reads} reads, {} stale, {refused} refused replica targets; \
         Eventual control: {control_stale} stale of {control_reads}",
        counts.len(),
        stale.len()
    );
    assert_eq!(stale, Vec::<String>::new(), "stale reads");
    assert!(
        control_stale > 0,
        "the Eventual control saw no stale read: the checker is broken"
    );
    assert!(refused < reads, "every replica target was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_sessions_never_read_backwards_and_eventual_reads_do() {
    let cluster = checker_cluster().await;
    let db = connect(test_config(&cluster)).await;
    // The control: a plain handle at Eventual, which no session keeps on one replica.
    let mut eventual = test_config(&cluster);
    eventual.consistency.handle = Consistency::Eventual;
    let eventual = connect(eventual).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("UPDATE counter SET v = v + 1 WHERE id = 1")
                    .execute(&db.using(Target::Primary))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let reads = 300 * cycles().div_ceil(6);
    let read_v = "SELECT v FROM counter WHERE id = 1";
    let mut backwards = BTreeMap::new();
    for (label, level) in [
        ("session, untargeted", Consistency::ReadAfterWrite),
        ("session, targeted at a replica", Consistency::ReadAfterWrite),
        ("session, with_target", Consistency::ReadAfterWrite),
        ("Eventual control (plain handle)", Consistency::Eventual),
    ] {
        let session = db.session_with(level);
        let (mut last, mut back) = (0i64, 0usize);
        for _ in 0..reads {
            let v: i64 = match label {
                l if l.contains("targeted at") => sqlx::query_scalar(read_v)
                    .fetch_one(&session.using(Target::Replica))
                    .await
                    .unwrap(),
                l if l.contains("with_target") => {
                    with_target(Target::Replica, sqlx::query_scalar(read_v).fetch_one(&session))
                        .await
                        .unwrap()
                }
                l if l.contains("control") => sqlx::query_scalar(read_v).fetch_one(&eventual).await.unwrap(),
                _ => sqlx::query_scalar(read_v).fetch_one(&session).await.unwrap(),
            };
            back += usize::from(v < last);
            last = last.max(v);
        }
        backwards.insert(label, (back, reads));
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    println!("checker, backwards reads: {backwards:?}");
    let (control, _) = backwards.remove("Eventual control (plain handle)").unwrap();
    for (label, (back, reads)) in backwards {
        assert_eq!(back, 0, "{label}: {back} of {reads} reads went backwards");
    }
    assert!(
        control > 0,
        "the Eventual control never went backwards: the checker is broken"
    );
}

/// The file of `token tok` lines `child_reads_with_tokens` checks, run by
/// `tokens_carry_every_write_into_a_second_process` in a child process.
const CHILD: &str = "COVET_CHECKER_TOKENS";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_carry_every_write_into_a_second_process() {
    let cluster = checker_cluster().await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let db = connect(test_config(&cluster)).await;
    let mut lines = Vec::new();
    let mut tok = 1_000_000;
    for _ in 0..cycles() {
        for path in WRITES {
            tok += 1;
            let session = db.session();
            drop(write(Via::Session(&session), path, tok).await);
            lines.push(format!("{} {tok}", session.token()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("covet.toml");
    // The paused standbys must stay eligible, however long the run: past `max_lag` the control's
    // reads would go to the primary and see every row.
    let mut child_config = test_config(&cluster);
    child_config.routing.max_lag = Duration::from_secs(3600);
    std::fs::write(&config, child_config.to_toml_string().unwrap()).unwrap();
    // In a file: a full run's tokens are more than an environment variable holds.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, lines.join("\n")).unwrap();
    let line = child_result(
        "child_reads_with_tokens",
        &config,
        (CHILD, tokens.as_os_str()),
        "TOKENS ",
    );
    let [with, without, total]: [usize; 3] = line
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    println!("checker, tokens in a second process: {with} of {total} seen with the token, {without} without");
    assert_eq!(
        (with, total),
        (lines.len(), lines.len()),
        "reads with a token missed writes"
    );
    assert_eq!(
        without, 0,
        "the control (no token) saw writes the standbys never replayed"
    );
}

#[tokio::test]
#[ignore = "run by tokens_carry_every_write_into_a_second_process"]
async fn child_reads_with_tokens() {
    let given = std::fs::read_to_string(std::env::var(CHILD).unwrap()).unwrap();
    let db = ReplicatedPool::connect(ReplicationConfig::from_env().unwrap())
        .await
        .unwrap();
    covet_tests::wait_states(&db, covet_replication::NodeState::Healthy, Duration::from_secs(20)).await;
    let exists = "SELECT EXISTS (SELECT 1 FROM c WHERE tok = $1)";
    let (mut with, mut without, mut total) = (0, 0, 0);
    for line in given.lines() {
        let (token, tok) = line.split_once(' ').unwrap();
        let tok: i64 = tok.parse().unwrap();
        let session = db.session_from_token(token).unwrap();
        let seen: bool = sqlx::query_scalar(exists).bind(tok).fetch_one(&session).await.unwrap();
        with += usize::from(seen);
        let seen: bool = sqlx::query_scalar(exists)
            .bind(tok)
            .fetch_one(&db.session_with(Consistency::Eventual))
            .await
            .unwrap();
        without += usize::from(seen);
        total += 1;
    }
    println!("TOKENS {with} {without} {total}");
}
