//! The `covet` command line against a real cluster.

use std::process::Command;

use covet_replication::testing::LocalCluster;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn covet(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_covet"))
        .args(args)
        .env_remove("COVET_CONFIG")
        .env_remove("COVET_PRIMARY_URL")
        .env_remove("COVET_REPLICA_URLS")
        .output()
        .expect("run covet");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn classify_needs_no_database() {
    let r = covet(&["classify", "SELECT nextval('orders_id_seq')"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("class: Write"), "{}", r.stdout);
    assert!(r.stdout.contains("replica safe: false"), "{}", r.stdout);
    let r = covet(&["classify", "SELECT my_report(1)"]);
    assert!(
        r.stdout.contains("class: Read") && r.stdout.contains("unknown functions"),
        "{}",
        r.stdout
    );
}

/// `covet classify ... | head -0`: stdout closed before the first line. It exited 101 with a
/// panic; now its own exit code, silently.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_covet"))
        .args(["classify", "SELECT nextval('orders_id_seq')"])
        .stdout(writer)
        .output()
        .expect("run covet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[primary]\nhost = \"db1\"\npassword = \"hunter2\"\n[[replicas]]\nhost = \"db2\"\nweight = 0\n",
    )
    .expect("write");
    let r = covet(&["status", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("replicas[0].weight: must be > 0"), "{}", r.stderr);
    assert!(!r.stderr.contains("hunter2"));
    let r = covet(&["status"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("COVET_PRIMARY_URL"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_explain_switchover_and_audit() {
    let cluster = LocalCluster::builder()
        .replicas(2)
        .password("s3cret pw")
        .start()
        .await
        .expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let path = dir.path().join("covet.toml");
    let mut config = format!("[primary]\nurl = \"{}\"\n", cluster.url(0).expect("url"));
    for i in 1..=2 {
        config.push_str(&format!("[[replicas]]\nurl = \"{}\"\n", cluster.url(i).expect("url")));
    }
    config.push_str(&format!("[failover]\naudit_log = \"{}\"\n", audit.display()));
    std::fs::write(&path, config).expect("write config");
    let cfg = path.to_str().expect("utf-8").to_owned();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", cfg.as_str()]);
        let r = covet(&all);
        assert!(
            !r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"),
            "{} {}",
            r.stdout,
            r.stderr
        );
        r
    };

    let r = run(&["status"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for node in ["primary ", "replica1", "replica2", "healthy"] {
        assert!(r.stdout.contains(node), "{}", r.stdout);
    }
    let r = run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["timeline"], 1);

    let r = run(&["check"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "ok"), "{}", r.stderr);
    let r = run(&["explain", "SELECT 1"]);
    assert!(r.stdout.starts_with("replica"), "{}", r.stdout);
    let r = run(&["explain", "INSERT INTO t VALUES (1)"]);
    assert_eq!(r.stdout.trim(), "primary (write)");

    let r = run(&["switchover", "--to", "replica1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("Completed: primary -> replica1 (timeline 2)"),
        "{}",
        r.stdout
    );
    for step in ["fence", "catch_up", "promote", "switch", "repoint"] {
        assert!(r.stdout.contains(step), "{}", r.stdout);
    }

    // A process started later with the same (now stale) configuration follows the cluster:
    // the configured primary is fenced, replica1 writes on timeline 2.
    let r = run(&["explain", "INSERT INTO t VALUES (1)"]);
    assert_eq!(r.stdout.trim(), "replica1 (write)", "{}", r.stderr);
    // It says what the old primary is and what to do; the cluster is healthy without it.
    let r = run(&["check"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("warning: primary is fenced") && r.stdout.contains("pg_rewind"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ok, but 1 fenced node(s) to rebuild"), "{}", r.stdout);
    let r = run(&["status"]);
    let old = r.stdout.lines().find(|l| l.starts_with("| primary ")).expect("its row");
    assert!(
        old.contains("fenced") && old.contains("diverged") && !old.contains("0.000"),
        "{old}"
    );
    // A node down still fails the check.
    cluster.kill(2).await.expect("kill replica2");
    let r = run(&["check"]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(r.stdout.contains("replica2 is"), "{}", r.stdout);

    let r = run(&["audit"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].contains("switchover completed primary -> replica1"),
        "{}",
        r.stdout
    );
    // The later processes' adoptions are in the shared log too.
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("adopt completed primary -> replica1")),
        "{}",
        r.stdout
    );
    let r = run(&["switchover", "--to", "primary"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot promote primary"), "{}", r.stderr);
}

/// PostgreSQL's default `wal_retrieve_retry_interval` (5 s) made one failover in five take
/// 5.5 s instead of 0.45 s: a standby whose primary died sleeps that long, and `pg_promote`
/// waits it out. The library leaves the servers' settings to their operator and says so:
/// `covet check` (and `status()`) warn, naming each standby; at 200 ms they say nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_slow_wal_retrieve_retry_interval() {
    for (interval, warned) in [("5s", true), ("200ms", false)] {
        let cluster = LocalCluster::builder()
            .replicas(2)
            .setting("wal_retrieve_retry_interval", interval)
            .start()
            .await
            .expect("cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("covet.toml");
        let mut config = format!("[primary]\nurl = \"{}\"\n", cluster.url(0).expect("url"));
        for i in 1..=2 {
            config.push_str(&format!("[[replicas]]\nurl = \"{}\"\n", cluster.url(i).expect("url")));
        }
        std::fs::write(&path, config).expect("write config");
        let r = covet(&["check", "--config", path.to_str().expect("utf-8")]);
        assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
        for replica in ["replica1", "replica2"] {
            let line = format!("warning: {replica}: wal_retrieve_retry_interval is 5s");
            assert_eq!(r.stdout.contains(&line), warned, "{interval}: {}", r.stdout);
        }
        assert_eq!(r.stdout.contains("warning"), warned, "{}", r.stdout);
        assert!(r.stdout.contains("ok"), "{}", r.stdout);
    }
}
