//! Focused tests of the classification rules.

use super::functions::Builtins;
use super::{Classifier, FunctionSafety, Hint, PANICKED, QueryClass, QueryKind, TransactionOp, classify};

#[track_caller]
fn assert_class(sql: &str, class: QueryClass) -> QueryKind {
    let kind = classify(sql);
    assert_eq!(kind.class(), class, "{sql}: {kind:?}");
    kind
}

#[track_caller]
fn assert_write(sql: &str) {
    let kind = assert_class(sql, QueryClass::Write);
    assert!(!kind.is_replica_safe(), "{sql}: {kind:?}");
}

#[track_caller]
fn assert_safe_read(sql: &str) {
    let kind = assert_class(sql, QueryClass::Read);
    assert!(kind.is_replica_safe(), "{sql}: {kind:?}");
}

#[track_caller]
fn assert_session(sql: &str) {
    let kind = assert_class(sql, QueryClass::SessionState);
    assert!(!kind.is_replica_safe(), "{sql}: {kind:?}");
}

#[test]
fn plain_reads_are_replica_safe() {
    for sql in [
        "SELECT 1",
        "select id, name from users where id = $1",
        "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id GROUP BY u.id HAVING sum(o.total) > 10",
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t",
        "SELECT * FROM generate_series(1, 10) g",
        "VALUES (1), (2)",
        "SHOW search_path",
        "SELECT now(), random(), clock_timestamp(), gen_random_uuid(), CURRENT_TIMESTAMP",
        "SELECT coalesce(a, 0), nullif(b, 1), greatest(1, 2) FROM t",
        "SELECT pg_catalog.now(), information_schema._pg_char_max_length(1, 2)",
        "SELECT regrole('postgres'), int4(1.5)",
        "COPY t TO STDOUT",
        "COPY (SELECT * FROM t WHERE a > 1) TO STDOUT WITH (FORMAT csv)",
        "SELECT ARRAY(SELECT 1), 1 = ALL('{1}')",
    ] {
        assert_safe_read(sql);
    }
}

#[test]
fn dml_ddl_and_maintenance_are_writes() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE",
        "CREATE TABLE t (a int)",
        "CREATE TABLE t AS SELECT 1",
        "ALTER TABLE t ADD COLUMN b int",
        "DROP TABLE t",
        "COMMENT ON TABLE t IS 'x'",
        "GRANT SELECT ON t TO u",
        "REVOKE SELECT ON t FROM u",
        "TRUNCATE t",
        "VACUUM",
        "VACUUM ANALYZE foo",
        "ANALYZE foo",
        "CLUSTER foo USING idx",
        "REINDEX TABLE foo",
        "REFRESH MATERIALIZED VIEW mv",
        "CHECKPOINT",
        "COPY t FROM STDIN",
        "COPY t (a, b) FROM '/tmp/x' WITH (FORMAT csv)",
        "SELECT 1 AS a INTO t2",
        "CALL p(1)",
        "DO $$ BEGIN PERFORM 1; END $$",
        "NOTIFY chan, 'x'",
        "SECURITY LABEL ON TABLE t IS 'x'",
    ] {
        assert_write(sql);
    }
}

#[test]
fn lock_is_a_write_in_every_mode() {
    for mode in [
        "ACCESS SHARE",
        "ROW SHARE",
        "ROW EXCLUSIVE",
        "SHARE UPDATE EXCLUSIVE",
        "SHARE",
        "SHARE ROW EXCLUSIVE",
        "EXCLUSIVE",
        "ACCESS EXCLUSIVE",
    ] {
        assert_write(&format!("LOCK TABLE t IN {mode} MODE"));
    }
    assert_write("LOCK t");
}

#[test]
fn row_locking_clauses_are_writes() {
    for sql in [
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t WHERE id = $1 FOR UPDATE SKIP LOCKED",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR KEY SHARE NOWAIT",
        "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
    ] {
        assert_write(sql);
    }
}

#[test]
fn data_modifying_ctes_are_writes() {
    for sql in [
        "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x",
        "WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x",
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x",
        "WITH a AS (SELECT 1), b AS (UPDATE t SET a = 2 RETURNING a) SELECT * FROM a, b",
    ] {
        assert_write(sql);
    }
}

#[test]
fn explain_runs_only_with_analyze() {
    assert_write("EXPLAIN ANALYZE INSERT INTO t VALUES (1)");
    assert_write("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1");
    assert_write("EXPLAIN (ANALYZE true) DELETE FROM t");
    assert_write("EXPLAIN ANALYZE SELECT nextval('s')");
    // Plain EXPLAIN only plans, which a standby does for writes too.
    assert_safe_read("EXPLAIN INSERT INTO t VALUES (1)");
    assert_safe_read("EXPLAIN (ANALYZE false) INSERT INTO t VALUES (1)");
    assert_safe_read("EXPLAIN (ANALYZE off, COSTS off) DELETE FROM t");
    assert_safe_read("EXPLAIN ANALYZE SELECT * FROM t");
    assert_session("EXPLAIN EXECUTE q1(1)");
    // Not parsed by sqlparser: judged from the tokens, and never sent to a replica.
    assert_write("EXPLAIN (ANALYZE, COSTS OFF) CREATE TABLE s.t (a) AS SELECT 1 WITH DATA");
    let unparsed = classify("EXPLAIN (COSTS OFF) UPDATE t SET a = a WHERE CURRENT OF c");
    assert!(!unparsed.is_parsed() && !unparsed.is_replica_safe(), "{unparsed:?}");
}

#[test]
fn multi_statement_strings_take_the_strongest_class() {
    let kind = classify("SELECT 1; VACUUM");
    assert_eq!(kind.class(), QueryClass::Write);
    assert_eq!(kind.statement_count(), 2);
    assert!(!kind.is_replica_safe());
    assert_write("SELECT 1; INSERT INTO t VALUES (1); SELECT 2");
    assert_session("SET search_path = a; SELECT 1");
    assert_safe_read("SELECT 1; SELECT 2");
    // One part sqlparser cannot parse: the others are still classified.
    assert_write("SELECT 1; CHECKPOINT");
    assert_write("select 0; copy t from stdin; copy t from stdin; select 1");
    // Semicolons inside strings, dollar quotes and comments do not split.
    assert_safe_read("SELECT ';DELETE FROM t;', $$;DROP TABLE t;$$ /* ; TRUNCATE t */");
}

#[test]
fn side_effect_functions_anywhere_are_writes() {
    for sql in [
        "SELECT nextval('s')",
        "SELECT 1 FROM t WHERE a IN (SELECT nextval('s'))",
        "SELECT * FROM t WHERE id = (SELECT max(id) FROM u WHERE x = nextval('s'))",
        "WITH x AS (SELECT nextval('s') AS n) SELECT n FROM x",
        "SELECT * FROM nextval('s')",
        "SELECT * FROM t, LATERAL (SELECT setval('s', t.a)) x",
        "SELECT a FROM t ORDER BY nextval('s')",
        "SELECT CASE WHEN a THEN pg_advisory_lock(1) END FROM t",
        "VALUES (1), (nextval('s'))",
        "COPY (SELECT nextval('s')) TO STDOUT",
        "SELECT pg_advisory_xact_lock(42)",
        "SELECT pg_try_advisory_lock(1, 2)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT pg_notify('chan', 'x')",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "SELECT set_config('search_path', 'x', false)",
        "SELECT lo_create(0)",
        "SELECT lo_import('/tmp/x')",
        "SELECT dblink_exec('conn', 'DELETE FROM t')",
        "SELECT pg_create_logical_replication_slot('s', 'pgoutput')",
        "SELECT pg_switch_wal()",
        "SELECT current_schema()",
        "SELECT CURRENT_SCHEMA",
        "SELECT current_schemas(true)",
        "SELECT currval('s'), lastval()",
    ] {
        assert_write(sql);
    }
}

#[test]
fn function_names_follow_postgres_case_rules() {
    assert_write("SELECT NEXTVAL('s')");
    assert_write("SELECT NextVal('s')");
    assert_write("SELECT \"nextval\"('s')");
    assert_write("SELECT pg_catalog.nextval('s')");
    assert_write("SELECT PG_CATALOG.NEXTVAL('s')");
    assert_write("SELECT \"pg_catalog\".\"nextval\"('s')");
    // A quoted upper-case name is another (user) function: unknown, so not replica safe.
    let kind = assert_class("SELECT \"NEXTVAL\"('s')", QueryClass::Read);
    assert_eq!(kind.unknown_functions(), ["NEXTVAL"]);
    assert!(!kind.is_replica_safe());
    // Built-in names qualified with another schema are user functions.
    let kind = assert_class("SELECT myschema.now()", QueryClass::Read);
    assert_eq!(kind.unknown_functions(), ["myschema.now"]);
}

#[test]
fn unknown_functions_are_listed_and_can_be_resolved() {
    let kind = classify(
        "SELECT Public.Create_Order(1), \"Sales\".\"Total\"(2), create_order(3), \
         public.create_order(4) FROM t WHERE f_leak(b)",
    );
    assert_eq!(kind.class(), QueryClass::Read);
    assert_eq!(
        kind.unknown_functions(),
        ["public.create_order", "Sales.Total", "create_order", "f_leak"]
    );
    assert!(!kind.is_replica_safe());
    assert!(kind.is_replica_safe_given(|_| Some(FunctionSafety::ReplicaSafe)));
    assert!(!kind.is_replica_safe_given(|f| (f != "f_leak").then_some(FunctionSafety::ReplicaSafe)));
    assert!(!kind.is_replica_safe_given(|_| Some(FunctionSafety::PrimaryOnly)));
    // Table functions in FROM are functions too.
    let kind = classify("SELECT * FROM my_srf(1) AS s, LATERAL other_srf(s.a)");
    assert_eq!(kind.unknown_functions(), ["my_srf", "other_srf"]);
    assert_eq!(FunctionSafety::from_provolatile('s'), FunctionSafety::ReplicaSafe);
    assert_eq!(FunctionSafety::from_provolatile('i'), FunctionSafety::ReplicaSafe);
    assert_eq!(FunctionSafety::from_provolatile('v'), FunctionSafety::PrimaryOnly);
}

#[test]
fn relations_read_are_listed_for_the_view_lookup() {
    let kind = classify(
        "SELECT * FROM Orders o JOIN public.\"Items\" i ON true, LATERAL generate_series(1, 2) g, \
         (SELECT * FROM pg_locks) l, pg_catalog.pg_class c, information_schema.tables t \
         WHERE o.id IN (SELECT id FROM sales.refunds) AND EXISTS (SELECT 1 FROM orders)",
    );
    assert_eq!(kind.relations(), ["orders", "public.Items", "sales.refunds"]);
    assert!(
        kind.is_replica_safe(),
        "relations alone do not make a read unsafe for classify"
    );
    // SQL text run by a function counts too; writes list none (they go to the primary anyway).
    let kind = classify("SELECT query_to_xml('SELECT * FROM audit_view', true, false, '')");
    assert_eq!(kind.relations(), ["audit_view"]);
    assert!(classify("INSERT INTO t SELECT * FROM v").relations().is_empty());
    assert_eq!(classify("BEGIN; SELECT * FROM a; COMMIT").relations(), ["a"]);
}

#[test]
fn sql_run_by_functions_is_classified() {
    assert_safe_read("SELECT query_to_xml('SELECT * FROM t', true, false, '')");
    assert_write("SELECT query_to_xml('SELECT nextval(''s'')', true, false, '')");
    assert_write("SELECT query_to_xml($1, true, false, '')");
    let kind = classify("SELECT query_to_xml('SELECT my_fn()', true, false, '')");
    assert_eq!(kind.unknown_functions(), ["my_fn"]);
    assert_write("SELECT ts_rewrite('a & b'::tsquery, 'SELECT t, nextval(''s'') FROM aliases')");
    assert_safe_read("SELECT ts_rewrite('a & b'::tsquery, 'SELECT t, s FROM aliases')");
    assert_safe_read("SELECT ts_rewrite('moscow', ('SELECT keyword, sample FROM aliases'::text))");
    assert_safe_read("SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)");
}

#[test]
fn session_state_goes_to_the_primary() {
    for sql in [
        "SET search_path = a, b",
        "SET LOCAL work_mem = '64MB'",
        "SET SESSION AUTHORIZATION u",
        "SET ROLE r",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SET CONSTRAINTS ALL DEFERRED",
        "RESET ALL",
        "RESET search_path",
        "LISTEN chan",
        "UNLISTEN *",
        "PREPARE p AS SELECT 1",
        "PREPARE p AS INSERT INTO t VALUES ($1)",
        "EXECUTE p(1)",
        "DEALLOCATE p",
        "DISCARD ALL",
        "LOAD 'auto_explain'",
        "CREATE TEMP TABLE t (a int)",
        "CREATE TEMPORARY VIEW v AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "FETCH 1 FROM c",
        "FETCH ctt",
        "MOVE NEXT IN c",
        "CLOSE c",
    ] {
        assert_session(sql);
    }
    // A cursor over a locking query writes.
    assert_write("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE");
}

#[test]
fn transaction_control_is_distinguishable() {
    let begin = assert_class("BEGIN", QueryClass::TransactionControl);
    let txn = begin.transaction().unwrap();
    assert_eq!(txn.op, TransactionOp::Begin);
    assert!(!txn.read_only);
    assert!(!begin.is_replica_safe());

    for sql in [
        "BEGIN READ ONLY",
        "START TRANSACTION READ ONLY",
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        "SET TRANSACTION READ ONLY",
    ] {
        let kind = assert_class(sql, QueryClass::TransactionControl);
        assert!(kind.transaction().unwrap().read_only, "{sql}");
        assert!(kind.is_replica_safe(), "{sql}");
    }
    // A standby refuses serializable transactions.
    for sql in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "BEGIN READ WRITE",
    ] {
        let kind = assert_class(sql, QueryClass::TransactionControl);
        assert!(!kind.is_replica_safe(), "{sql}");
    }
    for (sql, op) in [
        ("COMMIT", TransactionOp::Commit),
        ("END", TransactionOp::Commit),
        ("ROLLBACK", TransactionOp::Rollback),
        ("ABORT", TransactionOp::Rollback),
        ("SAVEPOINT a", TransactionOp::Savepoint),
        ("RELEASE SAVEPOINT a", TransactionOp::ReleaseSavepoint),
        ("ROLLBACK TO SAVEPOINT a", TransactionOp::RollbackToSavepoint),
        ("PREPARE TRANSACTION 'x'", TransactionOp::TwoPhase),
        ("COMMIT PREPARED 'x'", TransactionOp::TwoPhase),
        ("ROLLBACK PREPARED 'x'", TransactionOp::TwoPhase),
    ] {
        let kind = assert_class(sql, QueryClass::TransactionControl);
        assert_eq!(kind.transaction().unwrap().op, op, "{sql}");
        assert!(!kind.is_replica_safe(), "{sql}");
    }
    // A write inside a transaction block string is a write.
    assert_write("BEGIN; INSERT INTO t VALUES (1); COMMIT");
    let kind = assert_class("BEGIN READ ONLY; SELECT 1; COMMIT", QueryClass::TransactionControl);
    assert!(!kind.is_replica_safe());
}

#[test]
fn hints() {
    let kind = classify("/* covet:primary */ SELECT 1");
    assert_eq!(kind.hint(), Some(Hint::Primary));
    assert_eq!(kind.class(), QueryClass::Read);
    assert!(!kind.is_replica_safe());
    assert!(!kind.is_replica_safe_given(|_| Some(FunctionSafety::ReplicaSafe)));

    for sql in [
        "/* covet:replica */ SELECT my_report($1)",
        "/*covet:replica*/SELECT my_report($1)",
        "  /*  COVET :  Replica  */\n SELECT my_report($1)",
        "/* Covet:REPLICA - nightly report */ SELECT my_report($1)",
        "-- report\n/* covet:replica */ SELECT my_report($1)",
        "/* app=api */ /* covet:replica */ SELECT my_report($1)",
    ] {
        let kind = classify(sql);
        assert_eq!(kind.hint(), Some(Hint::Replica), "{sql}");
        // The caller vouches for the unknown function.
        assert!(kind.is_replica_safe(), "{sql}");
    }
    // Primary wins over replica.
    assert_eq!(
        classify("/* covet:replica */ /* covet:primary */ SELECT 1").hint(),
        Some(Hint::Primary)
    );
    // Only leading comments count, and only known words.
    assert_eq!(classify("SELECT 1 /* covet:replica */").hint(), None);
    assert_eq!(classify("/* covet:replicas */ SELECT 1").hint(), None);
    assert_eq!(classify("/* covet replica */ SELECT 1").hint(), None);
    // The write wins over a replica hint.
    for sql in [
        "/* covet:replica */ INSERT INTO t VALUES (1)",
        "/* covet:replica */ SELECT nextval('s')",
        "/* covet:replica */ SELECT * FROM t FOR UPDATE",
        "/* covet:replica */ CHECKPOINT",
    ] {
        let kind = classify(sql);
        assert_eq!(kind.hint(), Some(Hint::Replica));
        assert_eq!(kind.class(), QueryClass::Write, "{sql}");
        assert!(!kind.is_replica_safe(), "{sql}");
    }
    // Session state stays on the primary too.
    assert!(!classify("/* covet:replica */ SET search_path = a").is_replica_safe());
}

#[test]
fn unparseable_text_is_unknown_and_not_replica_safe() {
    for sql in [
        "SELEC * FRM t",
        "hello world",
        "SELECT 'unterminated",
        "U&' \\' UESCAPE '!'",
    ] {
        let kind = classify(sql);
        assert_eq!(kind.class(), QueryClass::Unknown, "{sql}: {kind:?}");
        assert!(!kind.is_parsed(), "{sql}");
        assert!(!kind.is_replica_safe(), "{sql}");
    }
    // The caller may vouch for text the parser does not know.
    assert!(classify("/* covet:replica */ SELEC 1").is_replica_safe());
}

#[test]
fn queries_the_parser_does_not_know_are_judged_by_their_tokens() {
    // Reads by their tokens, but unparsed text never goes to a replica without a hint.
    for sql in [
        "SELECT concat(VARIADIC ARRAY['a', 'b'])",
        "SELECT xmlelement(name foo, xmlattributes(true as bar))",
        "SELECT * FROM json_populate_recordset(null::record, '[]') AS (x int, y varchar(20))",
    ] {
        let kind = classify(sql);
        assert!(!kind.is_parsed(), "{sql}");
        assert_eq!(kind.class(), QueryClass::Read, "{sql}");
        assert!(!kind.is_replica_safe(), "{sql}");
        assert!(
            classify(&format!("/* covet:replica */ {sql}")).is_replica_safe(),
            "{sql}"
        );
    }
    let kind = classify("SELECT (my_fn(a := 1)).*, s.other(VARIADIC ARRAY[1])");
    assert_eq!(kind.class(), QueryClass::Read);
    assert_eq!(kind.unknown_functions(), ["my_fn", "s.other"]);
    assert!(!kind.is_replica_safe());
    assert_write("SELECT nextval('s'), concat(VARIADIC ARRAY['a'])");
    assert_write("SELECT concat(VARIADIC ARRAY['a']) INTO t2");
}

#[test]
fn empty_text_is_harmless() {
    for sql in ["", "   ", ";", "-- nothing"] {
        let kind = classify(sql);
        assert_eq!(kind.class(), QueryClass::Read, "{sql:?}: {kind:?}");
        assert_eq!(kind.statement_count(), 0);
    }
}

#[test]
fn classify_never_panics() {
    let deep_parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let deep_subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(300), ")".repeat(300));
    let long = format!("SELECT {} FROM t", vec!["a"; 20_000].join(", "));
    let nested_sql = format!(
        "SELECT {}'SELECT 1'{}",
        "query_to_xml(".repeat(50),
        ", true, false, '')".repeat(50)
    );
    let odd = [
        "",
        ";;;",
        "(((((",
        ")))))",
        "'",
        "\"",
        "$$",
        "$a$",
        "/*",
        "/* /* */",
        "--",
        "\0",
        "\u{feff}SELECT 1",
        "SELECT '\u{1F600}' AS \"\u{00e9}\"",
        "SELECT $1, $2, $99999999999999999999",
        "SELECT 1e99999999, 0x, 1..2",
        "E'\\",
        "SELECT U&'\\+0000'",
        "COPY t FROM STDIN; \\.",
        "EXPLAIN",
        "EXPLAIN (",
        "EXPLAIN ANALYZE",
        "WITH",
        "SELECT * FROM t FOR",
        "SELECT f(",
        "SELECT a.b.c.d.e(1)",
        "SELECT .f(1)",
        "SELECT \"\"()",
        "/* covet:",
        "/* covet:replica",
        "\r\n\t ",
        "SELECT 1;\n;\r\n;SELECT 2",
        &deep_parens,
        &deep_subqueries,
        &long,
        &nested_sql,
    ];
    // classify catches panics (see PANICKED), but none may happen in the first place.
    for sql in odd {
        assert_ne!(classify(sql).reason(), PANICKED, "{sql}");
    }
    // Every prefix of a realistic statement.
    let sql =
        "WITH x AS (UPDATE t SET a = nextval('s') RETURNING *) SELECT \"A\".b, f(x) FROM x FOR UPDATE; SELECT $$;$$";
    for end in (0..=sql.len()).filter(|&i| sql.is_char_boundary(i)) {
        assert_ne!(classify(&sql[..end]).reason(), PANICKED, "{}", &sql[..end]);
    }
}

#[test]
fn classifier_applies_configured_functions_and_caches() {
    let classifier = Classifier::new(100)
        .with_read_only_functions(["public.order_total", "Report_Row", "sales.total"])
        .with_write_functions(["audit.log_access", "claim_job"]);
    assert!(classifier.classify("SELECT public.order_total(1)").is_replica_safe());
    assert!(classifier.classify("SELECT order_total(1)").is_replica_safe());
    assert!(!classifier.classify("SELECT other.order_total(1)").is_replica_safe());
    assert!(classifier.classify("SELECT any_schema.report_row(1)").is_replica_safe());
    // Configured names match ignoring case, quoted or not.
    assert!(classifier.classify("SELECT \"Sales\".\"Total\"(1)").is_replica_safe());
    assert_eq!(
        classifier.classify("SELECT audit.log_access(1)").class(),
        QueryClass::Write
    );
    assert_eq!(
        classifier.classify("SELECT * FROM t WHERE id = claim_job()").class(),
        QueryClass::Write
    );
    // Built-ins that need the primary cannot be configured away.
    let classifier = classifier.with_read_only_functions(["nextval"]);
    assert_eq!(classifier.classify("SELECT nextval('s')").class(), QueryClass::Write);

    let before = classifier.stats().classified;
    let first = classifier.classify("SELECT 1");
    let cached = classifier.classify("SELECT 1");
    assert_eq!(first, cached);
    assert_eq!(classifier.stats().classified, before + 1);

    classifier.classify("SELEC 1");
    classifier.classify("SELEC 1");
    assert_eq!(classifier.parse_failures(), 1);
}

#[test]
fn remembered_writes_go_to_the_primary() {
    let classifier = Classifier::new(100);
    let sql = "SELECT * FROM my_locks ORDER BY 1";
    assert!(classifier.classify(sql).is_replica_safe());
    classifier.remember_write(sql);
    let kind = classifier.classify(sql);
    assert_eq!(kind.class(), QueryClass::Write);
    assert!(!kind.is_replica_safe());
    assert_eq!(classifier.stats().learned_writes, 1);
    // Remembering a known write changes nothing.
    classifier.remember_write("INSERT INTO t VALUES (1)");
    assert_eq!(classifier.stats().learned_writes, 1);
}

#[test]
fn classifier_and_kinds_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Classifier>();
    assert_send_sync::<QueryKind>();
}

#[test]
fn any_capacity_works() {
    let classifier = Classifier::new(0);
    assert!(classifier.classify("SELECT 1").is_replica_safe());
    assert!(classifier.classify("SELECT 1").is_replica_safe());
    assert_eq!(classifier.classify("DELETE FROM t").class(), QueryClass::Write);
    // A huge configured capacity allocates nothing up front.
    assert!(Classifier::new(usize::MAX).classify("SELECT 1").is_replica_safe());
}

#[test]
fn builtin_table_is_generated_sorted_and_complete() {
    let tsv = include_str!("pg_functions.tsv");
    assert!(tsv.starts_with("# Generated by scripts/gen-pg-functions.sh"));
    let rows: Vec<&str> = tsv.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(rows.len() > 2500, "{} rows", rows.len());
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "not sorted or has duplicates");
    for row in &rows {
        let cols: Vec<&str> = row.split('\t').collect();
        assert_eq!(cols.len(), 3, "{row}");
        assert!(matches!(cols[2], "i" | "s" | "v" | "t"), "{row}");
    }
    for name in [
        "now",
        "random",
        "nextval",
        "count",
        "generate_series",
        "jsonb_build_object",
    ] {
        assert!(Builtins::in_catalog("pg_catalog", name), "{name}");
    }
    assert!(!Builtins::in_catalog("pg_catalog", "create_order"));
}

#[test]
fn atomic_texts_run_as_one_implicit_transaction() {
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1; DELETE FROM u",
        "SELECT f()",
        "CREATE TABLE t (a int)",
    ] {
        assert!(classify(sql).is_atomic(), "{sql}");
    }
    for sql in [
        "BEGIN; INSERT INTO t VALUES (1); COMMIT",
        "INSERT INTO t VALUES (1); COMMIT; SELECT 1/0",
        "CALL p(1)",
        "SELECT 1; CALL p()",
        "DO $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$",
        "INSERT INTO t VALUES (1) RETURNING %%%",
    ] {
        assert!(!classify(sql).is_atomic(), "{sql}");
    }
}

#[test]
fn ddl_says_the_catalog_changed() {
    for sql in [
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'",
        "ALTER FUNCTION f() VOLATILE",
        "DROP VIEW v",
        "CREATE VIEW v AS SELECT f()",
        "ALTER TABLE t ADD COLUMN b int",
        "INSERT INTO t VALUES (1); DROP FUNCTION f()",
        // Not parsed by sqlparser: the leading keyword says it.
        "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1 $$ %%%",
        "COMMENT ON FUNCTION f() IS %%%",
    ] {
        assert!(classify(sql).changes_catalog(), "{sql}");
    }
    for sql in [
        "SELECT f()",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "CREATE TEMP TABLE x (a int)",
        "BEGIN",
        "CALL p()",
    ] {
        assert!(!classify(sql).changes_catalog(), "{sql}");
    }
}
