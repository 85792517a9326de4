//! Our own labelled statements, checked twice: PostgreSQL's hot standby confirms each label
//! (SQLSTATE 25006 or "during recovery" means write), and the classifier must agree.

use covet_replication::classify::classify;
use covet_tests::shared_cluster;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// A standby runs it and so may a replica.
    Read,
    /// A standby refuses it.
    Write,
    /// A standby runs it, but it belongs on the primary (advisory locks, session state, weak
    /// LOCKs protect nothing on a standby; unparseable text is never guessed onto a replica).
    Primary,
}
use Label::*;

const SETUP: &str = "
CREATE TABLE lbl (id int PRIMARY KEY, name text, doc jsonb);
CREATE TABLE lbl_child (id int REFERENCES lbl(id), v numeric);
CREATE SEQUENCE lbl_seq;
CREATE VIEW lbl_view AS SELECT id, name FROM lbl;
CREATE MATERIALIZED VIEW lbl_mat AS SELECT id FROM lbl;
CREATE PROCEDURE lbl_proc() LANGUAGE sql AS $$ SELECT 1 $$;
INSERT INTO lbl VALUES (1, 'a', '{\"k\": 1}'), (2, 'b', '{}');
";

const STATEMENTS: &[(&str, Label)] = &[
    ("SELECT 1", Read),
    ("SELECT * FROM lbl WHERE id = 1", Read),
    (
        "SELECT l.name, c.v FROM lbl l LEFT JOIN lbl_child c ON c.id = l.id ORDER BY 1",
        Read,
    ),
    ("SELECT count(*) FROM lbl_view", Read),
    ("SELECT * FROM lbl_mat", Read),
    ("WITH x AS (SELECT id FROM lbl) SELECT * FROM x", Read),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        Read,
    ),
    ("SELECT doc->>'k', jsonb_path_query_array(doc, '$.*') FROM lbl", Read),
    ("SELECT now(), clock_timestamp(), random(), gen_random_uuid()", Read),
    (
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), inet_server_port()",
        Read,
    ),
    // currval() reads the session's own sequence state: only meaningful where nextval() ran.
    ("SELECT currval('lbl_seq') IS NULL FROM lbl WHERE false", Primary),
    ("SELECT name FROM lbl WHERE name LIKE 'a%' UNION SELECT 'x'", Read),
    ("SELECT id, row_number() OVER (ORDER BY id) FROM lbl", Read),
    ("SELECT * FROM generate_series(1, 3) g", Read),
    ("VALUES (1), (2)", Read),
    // Not parsed by sqlparser: never guessed onto a replica.
    ("TABLE lbl", Primary),
    ("EXPLAIN SELECT * FROM lbl", Read),
    ("EXPLAIN INSERT INTO lbl VALUES (9, 'x')", Read),
    ("EXPLAIN ANALYZE SELECT * FROM lbl", Read),
    ("SHOW search_path", Read),
    ("SELECT * FROM lbl FOR READ ONLY", Primary),
    ("INSERT INTO lbl VALUES (3, 'c')", Write),
    ("INSERT INTO lbl VALUES (1, 'a') ON CONFLICT (id) DO NOTHING", Write),
    ("UPDATE lbl SET name = 'z' WHERE id = 1", Write),
    ("DELETE FROM lbl WHERE id = 2", Write),
    (
        "MERGE INTO lbl t USING (VALUES (1)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET name = 'm'",
        Write,
    ),
    ("SELECT * FROM lbl FOR UPDATE", Write),
    ("SELECT * FROM lbl FOR NO KEY UPDATE", Write),
    ("SELECT * FROM lbl FOR SHARE", Write),
    ("SELECT * FROM lbl FOR KEY SHARE", Write),
    ("SELECT id INTO lbl_copy FROM lbl", Write),
    ("CREATE TABLE lbl_new AS SELECT * FROM lbl", Write),
    (
        "WITH d AS (DELETE FROM lbl WHERE id = 1 RETURNING *) SELECT * FROM d",
        Write,
    ),
    (
        "WITH u AS (UPDATE lbl SET name = 'q' RETURNING id) SELECT count(*) FROM u",
        Write,
    ),
    ("EXPLAIN ANALYZE INSERT INTO lbl VALUES (7, 'e')", Write),
    ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM lbl", Write),
    ("SELECT nextval('lbl_seq')", Write),
    ("SELECT setval('lbl_seq', 10)", Write),
    ("SELECT id, nextval('lbl_seq') FROM lbl", Write),
    ("SELECT * FROM lbl WHERE id = (SELECT nextval('lbl_seq'))", Write),
    ("SELECT txid_current()", Write),
    ("SELECT pg_current_xact_id()", Write),
    ("SELECT pg_notify('chan', 'payload')", Write),
    ("SELECT lo_create(0)", Write),
    ("SELECT 1; DELETE FROM lbl WHERE id = 2", Write),
    ("TRUNCATE lbl_child", Write),
    ("LOCK TABLE lbl IN EXCLUSIVE MODE", Write),
    ("BEGIN; LOCK TABLE lbl IN ACCESS SHARE MODE; COMMIT", Primary),
    ("VACUUM lbl", Write),
    ("ANALYZE lbl", Write),
    ("REFRESH MATERIALIZED VIEW lbl_mat", Write),
    ("CREATE INDEX ON lbl (name)", Write),
    ("ALTER TABLE lbl ADD COLUMN extra int", Write),
    ("DROP TABLE lbl_child", Write),
    ("COMMENT ON TABLE lbl IS 'x'", Write),
    ("GRANT SELECT ON lbl TO PUBLIC", Write),
    ("CREATE TEMP TABLE tmp_lbl (x int)", Write),
    ("COPY lbl FROM STDIN", Write),
    // A standby runs it as a restartpoint, which is not what the caller asked for.
    ("CHECKPOINT", Primary),
    ("CLUSTER lbl USING lbl_pkey", Write),
    ("REINDEX TABLE lbl", Write),
    // This procedure only reads, but a procedure may write and commit: the primary.
    ("CALL lbl_proc()", Primary),
    ("SELECT pg_advisory_lock(42)", Primary),
    ("SELECT pg_try_advisory_lock(43)", Primary),
    ("SELECT pg_advisory_xact_lock(44)", Primary),
    ("SELECT set_config('application_name', 'x', false)", Primary),
    ("SET application_name = 'x'", Primary),
    ("LISTEN chan", Write),
    ("PREPARE q(int) AS SELECT $1", Primary),
    ("DISCARD ALL", Primary),
];

/// What the standby says: `Ok(())` if it ran the statement, `Err(true)` if it refused it as a
/// write, `Err(false)` for any other error.
async fn standby_verdict(conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), bool> {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let db = e.as_database_error();
            let code = db.and_then(|d| d.code()).unwrap_or_default();
            let msg = db.map(|d| d.message().to_string()).unwrap_or_default();
            Err(code == "25006" || msg.contains("during recovery") || msg.contains("hot standby"))
        }
    }
}

#[tokio::test]
async fn labels_hold_on_a_real_standby_and_the_classifier_agrees() {
    let cluster = shared_cluster().await;
    let schema = format!("lbl_{}", std::process::id());
    cluster
        .execute(
            0,
            &format!("CREATE SCHEMA {schema}; SET search_path = {schema}; {SETUP}"),
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let replica = cluster.replicas()[0];
    let mut wrong = Vec::new();
    for &(sql, label) in STATEMENTS {
        // A fresh connection each time: session state and failed transactions don't leak.
        let mut conn = cluster.connect(replica).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let verdict = standby_verdict(&mut conn, sql).await;
        let _ = conn.close().await;
        match (label, verdict) {
            (Read | Primary, Ok(())) | (Write, Err(true)) => {}
            (_, Err(false)) => wrong.push(format!("{sql}: failed on the standby for another reason")),
            (_, v) => wrong.push(format!("{sql}: labelled {label:?}, standby said {v:?}")),
        }
        let kind = classify(sql);
        if kind.is_replica_safe() != (label == Read) {
            wrong.push(format!("{sql}: labelled {label:?}, classified {kind:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} disagreements:\n{}", wrong.len(), wrong.join("\n"));
}
