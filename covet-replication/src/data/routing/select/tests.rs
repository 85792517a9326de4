use super::*;

#[derive(Debug, Clone)]
struct N {
    state: NodeState,
    region: Option<&'static str>,
    dc: Option<&'static str>,
    weight: u32,
    in_flight: u32,
    latency_us: u64,
    rtt_us: u64,
    lsn: u64,
    lag_ms: u64,
}

fn n() -> N {
    N {
        state: NodeState::Healthy,
        region: None,
        dc: None,
        weight: 1,
        in_flight: 0,
        latency_us: 200,
        rtt_us: 100,
        lsn: 100,
        lag_ms: 0,
    }
}

impl Candidate for N {
    fn id(&self) -> &str {
        "n"
    }
    fn state(&self) -> NodeState {
        self.state
    }
    fn region(&self) -> Option<&str> {
        self.region
    }
    fn datacenter(&self) -> Option<&str> {
        self.dc
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> u32 {
        self.in_flight
    }
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us)
    }
    fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us)
    }
    fn replay_lsn(&self) -> Lsn {
        Lsn(self.lsn)
    }
    fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms)
    }
}

/// Deterministic generator (xorshift) so the counts below are reproducible.
struct Seq(u64);
impl Rng for Seq {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn pick(primary: &N, replicas: &[N], req: ReadRequest<'_>, pref: ReadPreference) -> Result<Pick, NoNode> {
    select(primary, replicas, &req, pref, &mut Seq(0x9E37_79B9_7F4A_7C15))
}

/// How many of `draws` reads each replica gets.
fn shares(replicas: &[N], req: ReadRequest<'_>, draws: usize) -> Vec<usize> {
    let mut counts = vec![0; replicas.len()];
    let mut rng = Seq(42);
    for _ in 0..draws {
        match select(&n(), replicas, &req, ReadPreference::ReplicaPreferred, &mut rng) {
            Ok(Pick::Replica(i)) => counts[i] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    counts
}

#[test]
fn weights_spread_reads_in_proportion() {
    let replicas = [N { weight: 3, ..n() }, N { weight: 1, ..n() }];
    let c = shares(&replicas, ReadRequest::default(), 20_000);
    let share = c[0] as f64 / 20_000.0;
    assert!((0.72..=0.78).contains(&share), "weight 3:1 gave {c:?}");
}

#[test]
fn slow_or_busy_replica_loses_traffic() {
    let replicas = [
        N {
            latency_us: 20_000,
            ..n()
        },
        n(),
        n(),
    ];
    let c = shares(&replicas, ReadRequest::default(), 9_000);
    assert!(c[0] < 9_000 / 10, "slow replica got {c:?}");
    let replicas = [N { in_flight: 40, ..n() }, n()];
    let c = shares(&replicas, ReadRequest::default(), 9_000);
    assert!(c[0] < 9_000 / 3, "busy replica got {c:?}");
    // Comparable nodes (latency within 2x) keep an even spread.
    let replicas = [
        N {
            latency_us: 4_000,
            ..n()
        },
        n(),
    ];
    let c = shares(&replicas, ReadRequest::default(), 10_000);
    assert!((4_500..=5_500).contains(&c[0]), "{c:?}");
}

#[test]
fn only_healthy_or_degraded_replicas_serve_and_healthy_wins() {
    for bad in [
        NodeState::Lagging,
        NodeState::Unhealthy,
        NodeState::Down,
        NodeState::Draining,
    ] {
        let replicas = [N { state: bad, ..n() }, n()];
        assert_eq!(shares(&replicas, ReadRequest::default(), 500), [0, 500], "{bad:?}");
    }
    let replicas = [
        N {
            state: NodeState::Degraded,
            ..n()
        },
        n(),
    ];
    assert_eq!(shares(&replicas, ReadRequest::default(), 500), [0, 500]);
    let replicas = [
        N {
            state: NodeState::Degraded,
            ..n()
        },
        N {
            state: NodeState::Down,
            ..n()
        },
    ];
    assert_eq!(
        shares(&replicas, ReadRequest::default(), 500),
        [500, 0],
        "degraded beats nothing"
    );
}

#[test]
fn fallback_rules_per_read_preference() {
    let down = [N {
        state: NodeState::Down,
        ..n()
    }];
    let up = [n()];
    let p = n();
    let req = ReadRequest::default();
    assert_eq!(pick(&p, &up, req, ReadPreference::Primary), Ok(Pick::Primary));
    assert_eq!(pick(&p, &up, req, ReadPreference::PrimaryPreferred), Ok(Pick::Primary));
    let p_down = N {
        state: NodeState::Down,
        ..n()
    };
    assert_eq!(
        pick(&p_down, &up, req, ReadPreference::PrimaryPreferred),
        Ok(Pick::Replica(0))
    );
    assert_eq!(
        pick(&p_down, &down, req, ReadPreference::PrimaryPreferred),
        Err(NoNode::NoEligibleReplica)
    );
    assert_eq!(pick(&p, &up, req, ReadPreference::Replica), Ok(Pick::Replica(0)));
    assert_eq!(
        pick(&p, &down, req, ReadPreference::Replica),
        Err(NoNode::NoEligibleReplica)
    );
    assert_eq!(
        pick(&p, &[], req, ReadPreference::Replica),
        Err(NoNode::NoEligibleReplica)
    );
    assert_eq!(
        pick(&p, &up, req, ReadPreference::ReplicaPreferred),
        Ok(Pick::Replica(0))
    );
    assert_eq!(
        pick(&p, &down, req, ReadPreference::ReplicaPreferred),
        Ok(Pick::FallbackPrimary)
    );
    // The request's preference overrides the default.
    let req_primary = ReadRequest {
        preference: Some(ReadPreference::Primary),
        ..req
    };
    assert_eq!(pick(&p, &up, req_primary, ReadPreference::Replica), Ok(Pick::Primary));
}

#[test]
fn nearest_takes_the_lowest_round_trip_primary_included() {
    let replicas = [N { rtt_us: 300, ..n() }, N { rtt_us: 150, ..n() }];
    let p = N { rtt_us: 200, ..n() };
    assert_eq!(
        pick(&p, &replicas, ReadRequest::default(), ReadPreference::Nearest),
        Ok(Pick::Replica(1))
    );
    let p = N { rtt_us: 100, ..n() };
    assert_eq!(
        pick(&p, &replicas, ReadRequest::default(), ReadPreference::Nearest),
        Ok(Pick::Primary)
    );
    let p_down = N {
        rtt_us: 1,
        state: NodeState::Down,
        ..n()
    };
    assert_eq!(
        pick(&p_down, &replicas, ReadRequest::default(), ReadPreference::Nearest),
        Ok(Pick::Replica(1))
    );
}

#[test]
fn preferred_region_is_soft_target_region_is_hard() {
    let replicas = [
        N {
            region: Some("us"),
            ..n()
        },
        N {
            region: Some("eu"),
            dc: Some("eu-1"),
            ..n()
        },
        N {
            region: Some("eu"),
            dc: Some("eu-2"),
            ..n()
        },
    ];
    let req = ReadRequest {
        preferred_region: Some("eu"),
        ..Default::default()
    };
    let c = shares(&replicas, req, 1_000);
    assert_eq!(c[0], 0, "{c:?}");
    assert!(c[1] > 300 && c[2] > 300, "{c:?}");
    let req = ReadRequest {
        preferred_region: Some("eu"),
        preferred_datacenter: Some("eu-2"),
        ..Default::default()
    };
    assert_eq!(shares(&replicas, req, 300), [0, 0, 300]);
    // Nobody in the preferred region: everyone else still serves.
    let req = ReadRequest {
        preferred_region: Some("ap"),
        ..Default::default()
    };
    assert!(shares(&replicas, req, 900).iter().all(|&c| c > 200));
    // A required region with no eligible replica: the primary only if it is there too.
    let p = N {
        region: Some("us"),
        ..n()
    };
    let req = ReadRequest {
        region: Some("ap"),
        ..Default::default()
    };
    assert_eq!(
        pick(&p, &replicas, req, ReadPreference::ReplicaPreferred),
        Err(NoNode::NoEligibleReplica)
    );
    let req = ReadRequest {
        region: Some("us"),
        ..Default::default()
    };
    assert_eq!(
        pick(&p, &replicas, req, ReadPreference::ReplicaPreferred),
        Ok(Pick::Replica(0))
    );
    let replicas_eu = [N {
        region: Some("eu"),
        ..n()
    }];
    assert_eq!(
        pick(&p, &replicas_eu, req, ReadPreference::ReplicaPreferred),
        Ok(Pick::FallbackPrimary)
    );
}

#[test]
fn min_lsn_and_staleness_exclude_replicas_behind() {
    let replicas = [
        N {
            lsn: 90,
            lag_ms: 5_000,
            ..n()
        },
        N {
            lsn: 120,
            lag_ms: 10,
            ..n()
        },
    ];
    let req = ReadRequest {
        min_lsn: Some(Lsn(100)),
        ..Default::default()
    };
    assert_eq!(shares(&replicas, req, 200), [0, 200]);
    let req = ReadRequest {
        max_staleness: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    assert_eq!(shares(&replicas, req, 200), [0, 200]);
    let req = ReadRequest {
        min_lsn: Some(Lsn(200)),
        ..Default::default()
    };
    assert_eq!(
        pick(&n(), &replicas, req, ReadPreference::ReplicaPreferred),
        Ok(Pick::FallbackPrimary)
    );
}
