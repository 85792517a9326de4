use super::*;
use crate::pg::WalReceiver;

const SYSTEM: u64 = 7;

fn survey(received: u64, receiver: Option<(&str, u16)>) -> Sample {
    Sample {
        in_recovery: true,
        received: Some(Lsn(received)),
        replayed: Some(Lsn(received)),
        system_id: SYSTEM,
        receiver: receiver.map(|(host, port)| WalReceiver {
            status: "streaming".to_owned(),
            sender_host: Some(host.to_owned()),
            sender_port: Some(port),
            timeline: Some(1),
        }),
        ..Sample::default()
    }
}

struct Case {
    ids: Vec<NodeId>,
    surveys: Vec<Option<Sample>>,
    kind: FailoverKind,
    target: Option<&'static str>,
    sync: Option<crate::cluster::SyncRule>,
    old_position: Lsn,
    config: FailoverConfig,
}

impl Case {
    /// Standbys `a`, `b`, `c` on ports 5001-5003, with these surveys.
    fn new(surveys: Vec<Option<Sample>>) -> Self {
        Case {
            ids: ["a", "b", "c"][..surveys.len()]
                .iter()
                .map(|&id| NodeId::from(id))
                .collect(),
            surveys,
            kind: FailoverKind::Automatic,
            target: None,
            sync: None,
            old_position: Lsn::ZERO,
            config: FailoverConfig::default(),
        }
    }

    fn plan(&self) -> Result<Plan, FailoverError> {
        let standbys: Vec<Standby<'_>> = self
            .ids
            .iter()
            .zip(&self.surveys)
            .enumerate()
            .map(|(i, (id, survey))| Standby {
                id,
                host: "127.0.0.1",
                port: 5001 + i as u16,
                survey: survey.as_ref(),
            })
            .collect();
        plan(&Facts {
            kind: self.kind,
            target: self.target,
            standbys: &standbys,
            system_id: SYSTEM,
            sync: self.sync.as_ref(),
            old_position: self.old_position,
            config: &self.config,
        })
    }

    fn abort(&self) -> String {
        match self.plan() {
            Ok(plan) => panic!("planned {plan:?}"),
            Err(e) => e.to_string(),
        }
    }
}

fn promoted(plan: Result<Plan, FailoverError>) -> String {
    match plan {
        Ok(Plan::Promote(c)) => c.id.to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_standby_that_received_the_most_is_promoted() {
    let case = Case::new(vec![Some(survey(100, None)), Some(survey(300, None)), None]);
    assert_eq!(promoted(case.plan()), "b");
}

#[test]
fn a_primary_that_answers_as_a_primary_is_not_failed_over() {
    let mut alive = survey(0, None);
    alive.in_recovery = false;
    let err = confirm(&NodeId::from("p"), Some(&alive)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "primary p is up and accepting writes; use a switchover to change primaries"
    );
    assert!(
        confirm(&NodeId::from("p"), Some(&survey(0, None))).is_ok(),
        "in recovery"
    );
    assert!(confirm(&NodeId::from("p"), None).is_ok(), "unreachable");
}

#[test]
fn a_standby_still_streaming_from_elsewhere_proves_the_primary_alive() {
    let case = Case::new(vec![
        Some(survey(100, Some(("10.0.0.9", 5432)))),
        Some(survey(100, None)),
    ]);
    assert_eq!(
        case.abort(),
        r#"standbys ["a"] are still streaming from the primary; not failing over"#
    );
    // Cascading: streaming from another standby that answered is no witness.
    let case = Case::new(vec![
        Some(survey(100, Some(("localhost", 5002)))),
        Some(survey(100, None)),
    ]);
    assert_eq!(promoted(case.plan()), "a");
}

#[test]
fn too_few_standbys_answering_abort() {
    let mut case = Case::new(vec![Some(survey(100, None)), None, None]);
    case.config.min_replicas = 2;
    assert_eq!(case.abort(), "1 standbys answered, failover.min_replicas is 2");
    let case = Case::new(vec![None, None]);
    assert_eq!(case.abort(), "0 standbys answered, failover.min_replicas is 1");
}

#[test]
fn an_automatic_failover_waits_for_the_listed_synchronous_standbys() {
    let mut named = survey(100, None);
    named.standby_name = Some("b".into());
    let mut case = Case::new(vec![Some(survey(100, None)), None]);
    case.sync = crate::cluster::SyncRule::parse("FIRST 1 (b)");
    assert_eq!(
        case.abort(),
        r#"synchronous replication: 1 standbys must answer, ["b"] did not (they may hold the last acknowledged commits)"#
    );
    // The operator's call: a manual failover goes ahead.
    case.kind = FailoverKind::Manual;
    assert_eq!(promoted(case.plan()), "a");
    // Once the listed one answers, it goes ahead automatically too.
    case.kind = FailoverKind::Automatic;
    case.surveys[1] = Some(named);
    assert_eq!(promoted(case.plan()), "a");
}

#[test]
fn a_standby_promoted_elsewhere_is_adopted() {
    let mut primary = survey(100, None);
    primary.in_recovery = false;
    let case = Case::new(vec![Some(survey(500, None)), Some(primary.clone())]);
    assert_eq!(case.plan().unwrap(), Plan::Adopt(NodeId::from("b")));
    // Not if it belongs to another cluster: then nothing can be promoted either.
    primary.system_id = 8;
    let mut case = Case::new(vec![Some(primary)]);
    case.config.exclude = vec![];
    assert_eq!(case.abort(), "no standby can be promoted: a: not a standby");
}

#[test]
fn no_candidate_lists_every_standby_and_why() {
    let mut foreign = survey(100, None);
    foreign.system_id = 9;
    let mut case = Case::new(vec![Some(survey(100, None)), Some(foreign)]);
    case.config.exclude = vec!["a".into()];
    assert_eq!(
        case.abort(),
        "no standby can be promoted: a: excluded by failover.exclude; b: system identifier 9 is not the cluster's 7"
    );
}

#[test]
fn a_named_target_that_cannot_be_promoted_says_why() {
    let mut case = Case::new(vec![Some(survey(100, None)), Some(survey(200, None))]);
    case.target = Some("a");
    assert_eq!(promoted(case.plan()), "a", "the target, though b received more");
    case.config.exclude = vec!["a".into()];
    assert_eq!(case.abort(), "cannot promote a: excluded by failover.exclude");
    case.target = Some("zz");
    assert_eq!(case.abort(), "cannot promote zz: not a standby that answered");
}

#[test]
fn losing_more_wal_than_allowed_aborts() {
    let mut case = Case::new(vec![Some(survey(1_000, None))]);
    case.old_position = Lsn(5_000);
    case.config.max_data_loss_bytes = Some(4_000);
    assert_eq!(promoted(case.plan()), "a", "4000 bytes: at the limit");
    case.config.max_data_loss_bytes = Some(3_999);
    assert_eq!(
        case.abort(),
        "promoting a would lose 4000 bytes of WAL (failover.max_data_loss_bytes = 3999)"
    );
}

#[test]
fn a_switchover_passes_over_standbys_not_streaming() {
    let (a, b) = (NodeId::from("a"), NodeId::from("b"));
    let standby = |id| Standby {
        id,
        host: "127.0.0.1",
        port: 5001,
        survey: None,
    };
    let (sa, sb) = (standby(&a), standby(&b));
    let (waiting, streaming) = (survey(900, None), survey(100, Some(("127.0.0.1", 5000))));
    let answered = [(&sa, &waiting), (&sb, &streaming)];
    assert_eq!(choose(&answered, None, true, SYSTEM, &[]).unwrap().id, b);
    assert_eq!(choose(&answered, None, false, SYSTEM, &[]).unwrap().id, a);
    let err = choose(&answered, Some("a"), true, SYSTEM, &[]).unwrap_err();
    assert_eq!(err.to_string(), "cannot promote a: not streaming from the primary");
}

#[test]
fn a_standby_promoted_since_the_survey_stops_the_promotion() {
    let (a, b) = (NodeId::from("a"), NodeId::from("b"));
    let mut left = survey(100, None);
    left.in_recovery = false;
    assert!(still_unpromoted(&[&a, &b], &[Some(survey(100, None)), None]).is_ok());
    let err = still_unpromoted(&[&a, &b], &[Some(survey(100, None)), Some(left)]).unwrap_err();
    assert_eq!(err.to_string(), "b was promoted elsewhere meanwhile");
}

#[test]
fn a_switchover_target_that_does_not_catch_up_says_how_far_it_got() {
    let err = FailoverError::CatchUp {
        node: NodeId::from("b"),
        needed: Lsn(0x0300_0000),
        replayed: Lsn(0x0200_0000),
    };
    assert_eq!(
        err.to_string(),
        "b replayed up to 0/2000000, needed 0/3000000 within failover.catchup_timeout"
    );
}
