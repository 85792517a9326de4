//! One row per rule of `decide`: what it is given, where the statement goes.

use super::*;
use crate::classify::classify;
use crate::cluster::new_node;
use crate::config::NodeConfig;
use crate::data::routing::select::Rng;

/// Always the first of the candidates.
struct First;

impl Rng for First {
    fn below(&mut self, _n: u64) -> u64 {
        0
    }
}

fn node(id: &str, port: u16, role: Role, lsn: u64) -> Arc<Node> {
    let node = new_node(
        &NodeConfig::new("127.0.0.1", port).with_id(id),
        role,
        NodeState::Healthy,
        Duration::from_secs(1),
        &crate::cluster::PoolHooks::default(),
    );
    node.observe_lsn(Lsn(lsn));
    node
}

/// A primary at 0/1F4 and replicas r1 (0/64) and r2 (0/C8), all healthy.
fn topology() -> Topology {
    Topology {
        primary: node("primary", 1, Role::Primary, 500),
        replicas: vec![node("r1", 2, Role::Replica, 100), node("r2", 3, Role::Replica, 200)],
    }
}

fn session(level: Consistency) -> SessionView {
    SessionView {
        level,
        pinned: false,
        since_last_write: None,
        sticky: None,
        min_lsn: None,
    }
}

fn render(d: Result<Decision, Error>) -> String {
    match d {
        Ok(Decision::Go(r)) => {
            let mut s = format!("{} {:?}", r.node.id, r.reason);
            if r.writes {
                s.push_str(" writes");
            }
            if let Some(lsn) = r.check {
                s.push_str(&format!(" check {lsn}"));
            }
            s
        }
        Ok(Decision::LeaveSticky) => "leave sticky".into(),
        Err(e) => format!("error: {e}"),
    }
}

struct Case {
    sql: &'static str,
    target: Option<Target>,
    exclude: Vec<NodeId>,
    force_primary: bool,
    consistency_fallback: bool,
    session: Option<SessionView>,
    replica_safe: Option<bool>,
    learned: bool,
}

fn case(sql: &'static str) -> Case {
    Case {
        sql,
        target: None,
        exclude: Vec::new(),
        force_primary: false,
        consistency_fallback: false,
        session: None,
        replica_safe: None,
        learned: false,
    }
}

impl Case {
    fn run(self, topology: &Topology, config: &ReplicationConfig) -> String {
        let kind = classify(self.sql);
        let facts = Facts {
            topology,
            kind: &kind,
            replica_safe: self.replica_safe.unwrap_or_else(|| kind.is_replica_safe()),
            learned: self.learned,
            target: self.target.as_ref(),
            exclude: &self.exclude,
            force_primary: self.force_primary,
            consistency_fallback: self.consistency_fallback,
            session: self.session,
            config,
        };
        render(decide(&facts, &mut First))
    }
}

#[tokio::test]
async fn each_rule_sends_the_statement_where_it_says() {
    let t = topology();
    let config = ReplicationConfig::default();
    let sticky = |id: &str, min_lsn: u64| SessionView {
        sticky: Some(Arc::new(NodeId::from(id))),
        min_lsn: Some(Lsn(min_lsn)),
        ..session(Consistency::ReadAfterWrite)
    };
    let rows: Vec<(&str, Case, &str)> = vec![
        ("a read", case("SELECT 1"), "r1 ReadPreference"),
        ("a write", case("INSERT INTO t VALUES (1)"), "primary Write writes"),
        (
            "a read the catalog says may write",
            Case {
                replica_safe: Some(false),
                ..case("SELECT f()")
            },
            "primary Write writes",
        ),
        (
            "a primary hint",
            case("/* covet:primary */ SELECT 1"),
            "primary Hint writes",
        ),
        ("a replica hint", case("/* covet:replica */ SELECT 1"), "r1 Hint"),
        (
            "a standby refused it",
            Case {
                force_primary: true,
                ..case("SELECT 1")
            },
            "primary Retry writes",
        ),
        (
            "a write targeted at a replica is refused",
            Case {
                target: Some(Target::Replica),
                ..case("DELETE FROM t")
            },
            "error: statement needs the primary (DELETE) but was targeted at replica; it was not sent",
        ),
        (
            "a write targeted at the primary by name",
            Case {
                target: Some(Target::Node("primary".into())),
                ..case("DELETE FROM t")
            },
            "primary Write writes",
        ),
        (
            "a replica did not catch up",
            Case {
                consistency_fallback: true,
                ..case("SELECT 1")
            },
            "primary Consistency",
        ),
        (
            "a learned read the primary serves counts as a write",
            Case {
                learned: true,
                replica_safe: Some(true),
                target: Some(Target::Primary),
                ..case("SELECT f()")
            },
            "primary Override writes",
        ),
        (
            "a learned read on a replica does not",
            Case {
                learned: true,
                replica_safe: Some(true),
                ..case("SELECT f()")
            },
            "r1 ReadPreference",
        ),
        (
            "after a failure on r1",
            Case {
                exclude: vec![NodeId::from("r1")],
                ..case("SELECT 1")
            },
            "r2 Retry",
        ),
        (
            "Target::Primary",
            Case {
                target: Some(Target::Primary),
                ..case("SELECT 1")
            },
            "primary Override",
        ),
        (
            "a node target",
            Case {
                target: Some(Target::Node("r2".into())),
                ..case("SELECT 1")
            },
            "r2 Override",
        ),
        (
            "an unknown node",
            Case {
                target: Some(Target::Node("r9".into())),
                ..case("SELECT 1")
            },
            "error: no node \"r9\" in the cluster",
        ),
        (
            "strong",
            Case {
                session: Some(session(Consistency::Strong)),
                ..case("SELECT 1")
            },
            "primary Consistency",
        ),
        (
            "a session whose position is unknown",
            Case {
                session: Some(SessionView {
                    pinned: true,
                    ..session(Consistency::ReadAfterWrite)
                }),
                ..case("SELECT 1")
            },
            "primary Consistency",
        ),
        (
            "a session whose position is unknown, read kept off the primary",
            Case {
                target: Some(Target::Replica),
                session: Some(SessionView {
                    pinned: true,
                    ..session(Consistency::ReadAfterWrite)
                }),
                ..case("SELECT 1")
            },
            "error: the session's position is unknown, so a read targeted at replica cannot be served; nothing was sent",
        ),
        (
            "inside a write window",
            Case {
                session: Some(SessionView {
                    since_last_write: Some(Duration::from_millis(10)),
                    ..session(Consistency::WriteWindow(Duration::from_secs(1)))
                }),
                ..case("SELECT 1")
            },
            "primary Consistency",
        ),
        (
            "past a write window",
            Case {
                session: Some(SessionView {
                    since_last_write: Some(Duration::from_secs(2)),
                    ..session(Consistency::WriteWindow(Duration::from_secs(1)))
                }),
                ..case("SELECT 1")
            },
            "r1 ReadPreference",
        ),
        (
            "a watermark only r2 is known to have",
            Case {
                session: Some(SessionView {
                    min_lsn: Some(Lsn(150)),
                    ..session(Consistency::ReadAfterWrite)
                }),
                ..case("SELECT 1")
            },
            "r2 ReadPreference",
        ),
        (
            "a watermark no replica is known to have: ask one",
            Case {
                session: Some(SessionView {
                    min_lsn: Some(Lsn(400)),
                    ..session(Consistency::ReadAfterWrite)
                }),
                ..case("SELECT 1")
            },
            "r1 ReadPreference check 0/190",
        ),
        (
            "a node target behind the watermark is checked",
            Case {
                target: Some(Target::Node("r1".into())),
                session: Some(SessionView {
                    min_lsn: Some(Lsn(150)),
                    ..session(Consistency::ReadAfterWrite)
                }),
                ..case("SELECT 1")
            },
            "r1 Override check 0/96",
        ),
        (
            "a monotonic session stays on its replica",
            Case {
                session: Some(sticky("r2", 150)),
                ..case("SELECT 1")
            },
            "r2 ReadPreference",
        ),
        (
            "and with a replica target",
            Case {
                target: Some(Target::Replica),
                session: Some(sticky("r2", 250)),
                ..case("SELECT 1")
            },
            "r2 Override check 0/FA",
        ),
        (
            "a node target elsewhere leaves its replica",
            Case {
                target: Some(Target::Node("r1".into())),
                session: Some(sticky("r2", 150)),
                ..case("SELECT 1")
            },
            "leave sticky",
        ),
        (
            "its replica failed the statement: leave it",
            Case {
                exclude: vec![NodeId::from("r2")],
                session: Some(sticky("r2", 150)),
                ..case("SELECT 1")
            },
            "leave sticky",
        ),
        (
            "its replica is gone from the topology: leave it",
            Case {
                session: Some(sticky("r7", 150)),
                ..case("SELECT 1")
            },
            "leave sticky",
        ),
        (
            "a write leaves a sticky session where writes go",
            Case {
                session: Some(sticky("r2", 150)),
                ..case("UPDATE t SET a = 1")
            },
            "primary Write writes",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, case, expected) in rows {
        let got = case.run(&t, &config);
        if got != expected {
            wrong.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn health_views_and_preferences_decide_among_replicas() {
    let t = topology();
    let config = ReplicationConfig::default();
    t.replicas[0].set_state(NodeState::Down);
    assert_eq!(case("SELECT 1").run(&t, &config), "r2 ReadPreference");
    // A node target that is down is refused; the primary is not read in its place.
    let down = Case {
        target: Some(Target::Node("r1".into())),
        ..case("SELECT 1")
    };
    assert_eq!(down.run(&t, &config), "error: node r1 is down and cannot take queries");
    t.replicas[1].set_state(NodeState::Down);
    assert_eq!(case("SELECT 1").run(&t, &config), "primary Fallback");
    let replica_only = Case {
        target: Some(Target::Replica),
        ..case("SELECT 1")
    };
    assert_eq!(
        replica_only.run(&t, &config),
        "error: no eligible replica for a read with preference Replica"
    );
    // A sticky session whose replica went down leaves it.
    let sticky = Case {
        session: Some(SessionView {
            sticky: Some(Arc::new(NodeId::from("r2"))),
            ..session(Consistency::ReadAfterWrite)
        }),
        ..case("SELECT 1")
    };
    assert_eq!(sticky.run(&t, &config), "leave sticky");
}

/// A read kept off the primary in a session that no replica has caught up with is refused
/// with the position it needs, whether or not a replica was close enough to be asked.
#[tokio::test]
async fn a_replica_read_no_replica_has_caught_up_with_names_what_it_lacks() {
    let t = topology();
    let config = ReplicationConfig::default();
    let behind = |target: Target| Case {
        target: Some(target),
        session: Some(SessionView {
            min_lsn: Some(Lsn(300)),
            ..session(Consistency::ReadAfterWrite)
        }),
        ..case("SELECT 1")
    };
    // Lagging little: asked on the read's connection.
    assert_eq!(behind(Target::Replica).run(&t, &config), "r1 Override check 0/12C");
    // Lagging a minute: no chance within the wait, not asked.
    for r in &t.replicas {
        r.measured(Duration::ZERO, Duration::from_secs(60));
    }
    let needs = "error: node r2 had replayed 0/C8, the session needs 0/12C";
    assert_eq!(behind(Target::Replica).run(&t, &config), needs);
    assert_eq!(
        behind(Target::Preference(ReadPreference::Replica)).run(&t, &config),
        needs
    );
    // Down replicas are no excuse: no replica can serve it at all.
    for r in &t.replicas {
        r.set_state(NodeState::Down);
    }
    assert_eq!(
        behind(Target::Replica).run(&t, &config),
        "error: no eligible replica for a read with preference Replica"
    );
}

/// `BoundedStaleness(d)` is a bound: a replica whose measured lag plus that measurement's age
/// could exceed `d` serves the read only once it shows (on the read's connection) that it
/// replayed what the primary had less than `d` ago.
#[tokio::test]
async fn a_bounded_read_goes_where_the_bound_is_shown() {
    let t = topology();
    let config = ReplicationConfig::default();
    let s = |ms| Duration::from_millis(ms);
    let bounded = |target: Option<Target>| Case {
        session: Some(session(Consistency::BoundedStaleness(s(2000)))),
        target,
        ..case("SELECT 1")
    };
    let (primary, r1, r2) = (&t.primary, &t.replicas[0], &t.replicas[1]);
    primary.measured(s(100), Duration::ZERO);
    // Measured 0.5 s ago, 1 s behind: at most 1.5 s now, no check.
    r1.measured(s(1500), s(1000));
    r2.measured(s(1500), s(1000));
    assert_eq!(bounded(None).run(&t, &config), "r1 ReadPreference");
    // r1 measured 1.5 s ago at 1 s behind: it may be 2.5 s behind now; r2 is not.
    r1.measured(s(2500), s(1000));
    assert_eq!(bounded(None).run(&t, &config), "r2 ReadPreference");
    // Neither shows it: one whose lag leaves a chance must have replayed the primary's
    // position of 0.1 s ago (0/1F4).
    r2.measured(s(2500), s(1000));
    assert_eq!(bounded(None).run(&t, &config), "r1 ReadPreference check 0/1F4");
    // A node target gets the same check, or a refusal when nothing can show it.
    assert_eq!(
        bounded(Some(Target::Node("r2".into()))).run(&t, &config),
        "r2 Override check 0/1F4"
    );
    primary.measured(s(1990), Duration::ZERO);
    assert_eq!(
        bounded(Some(Target::Node("r2".into()))).run(&t, &config),
        "error: r2 cannot be shown to be less than 2s behind the primary; nothing was sent"
    );
    // Untargeted, the primary serves it.
    assert_eq!(bounded(None).run(&t, &config), "primary Fallback");
    // Lag beyond the bound: no chance, whatever the primary.
    primary.measured(s(100), Duration::ZERO);
    r1.measured(s(2500), s(2500));
    r2.measured(s(2500), s(2500));
    assert_eq!(bounded(None).run(&t, &config), "primary Fallback");
    // Never measured (a replica just added, or lost): nothing is known of its lag.
    let fresh = topology();
    fresh.primary.measured(s(100), Duration::ZERO);
    assert_eq!(bounded(None).run(&fresh, &config), "r1 ReadPreference check 0/1F4");
}
