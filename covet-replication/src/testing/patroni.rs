//! A real Patroni cluster on loopback: one etcd and Patroni members over the system's
//! PostgreSQL, for tests that follow an HA manager. Needs `patroni` and `etcd` on the `PATH`
//! (Debian: `apt-get install patroni etcd-server`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClusterError;
use super::binaries::find_bindir;
use super::cluster::free_port;
use super::etcd::{EtcdServer, spawn_logged};
use super::process::{RunAs, run_tool, signal};
use crate::core::lock;
use crate::ha::patroni::{ClusterView, Patroni};

const LOOPBACK: &str = "127.0.0.1";

/// One Patroni member.
#[derive(Debug)]
struct Member {
    name: String,
    pg_port: u16,
    api_port: u16,
    config: PathBuf,
    data: PathBuf,
    process: Mutex<Option<Child>>,
}

/// etcd and Patroni members (`node1`, `node2`, ...), ttl 10 s, loop_wait 2 s, retry_timeout 4 s.
/// Everything is killed and removed on drop.
#[derive(Debug)]
pub struct PatroniCluster {
    dir: tempfile::TempDir,
    run_as: RunAs,
    etcd: EtcdServer,
    members: Vec<Member>,
    api: Patroni,
}

impl PatroniCluster {
    /// Starts etcd and `members` Patroni members, and waits until one leads and the others
    /// stream from it.
    ///
    /// # Errors
    /// [`ClusterError::BinariesNotFound`] without PostgreSQL, a tool or I/O error, or
    /// [`ClusterError::Timeout`] if the cluster does not form within 90 s.
    pub async fn start(members: usize) -> Result<Self, ClusterError> {
        Self::start_with(members, false).await
    }

    /// [`start`](Self::start), with Patroni's `synchronous_mode` on or off: on, a commit is
    /// acknowledged once a synchronous standby has it, and only such a standby is promoted.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with(members: usize, synchronous: bool) -> Result<Self, ClusterError> {
        let bindir = find_bindir(None, None)?;
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("covet-patroni-")
            .tempdir()
            .map_err(ClusterError::io("creating the Patroni directory"))?;
        run_as.give(dir.path())?;
        let hosts = [LOOPBACK.to_owned()];
        let etcd = EtcdServer::spawn(dir.path(), &run_as)?;
        let etcd_client = etcd.port();
        let mut list = Vec::new();
        for i in 1..=members {
            let name = format!("node{i}");
            let (pg_port, api_port) = (free_port(&hosts)?, free_port(&hosts)?);
            let config = dir.path().join(format!("{name}.yml"));
            let data = dir.path().join(&name);
            std::fs::write(
                &config,
                member_yaml(
                    &name,
                    [pg_port, api_port, etcd_client],
                    synchronous,
                    &data,
                    &bindir,
                    dir.path(),
                ),
            )
            .map_err(ClusterError::io("writing a Patroni configuration"))?;
            run_as.give(&config)?;
            list.push(Member {
                name,
                pg_port,
                api_port,
                config,
                data,
                process: Mutex::new(None),
            });
        }
        let endpoints: Vec<String> = list
            .iter()
            .map(|m| format!("http://{LOOPBACK}:{}", m.api_port))
            .collect();
        let api = Patroni::new(&endpoints, Duration::from_secs(2)).map_err(|e| ClusterError::Tool {
            program: "patroni REST client".into(),
            status: e.to_string(),
            output: String::new(),
        })?;
        let cluster = PatroniCluster {
            dir,
            run_as,
            etcd,
            members: list,
            api,
        };
        for member in &cluster.members {
            cluster.start_member(&member.name)?;
        }
        cluster.wait_formed(Duration::from_secs(90)).await?;
        Ok(cluster)
    }

    /// The members' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Every member as one multi-host URL, in order.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{LOOPBACK}:{}", m.pg_port))
            .collect();
        format!("postgres://postgres@{}/postgres?sslmode=disable", hosts.join(","))
    }

    /// The members' REST API URLs.
    pub fn rest_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{LOOPBACK}:{}", m.api_port))
            .collect()
    }

    /// The PostgreSQL port of member `name`.
    ///
    /// # Panics
    /// For a name that is not a member.
    pub fn port(&self, name: &str) -> u16 {
        self.member(name).pg_port
    }

    /// The REST API port of member `name`.
    ///
    /// # Panics
    /// For a name that is not a member.
    pub fn api_port(&self, name: &str) -> u16 {
        self.member(name).api_port
    }

    /// The member listening on PostgreSQL port `port`.
    pub fn name_of_port(&self, port: i32) -> Option<String> {
        self.members
            .iter()
            .find(|m| i32::from(m.pg_port) == port)
            .map(|m| m.name.clone())
    }

    /// The member holding the leader lock now, as Patroni says.
    pub async fn leader(&self) -> Option<String> {
        let view = self.api.cluster().await.ok()?;
        view.leader().map(|l| l.name.clone())
    }

    /// What `GET /cluster` says now: `(name, role, state, timeline)` per member.
    pub async fn members(&self) -> Vec<(String, String, String, Option<u32>)> {
        self.api
            .cluster()
            .await
            .map(|v: ClusterView| {
                v.members
                    .into_iter()
                    .map(|m| (m.name, m.role, m.state, m.timeline))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until a leader accepts writes and every running member streams from it; returns
    /// the leader.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`].
    pub async fn wait_formed(&self, timeout: Duration) -> Result<String, ClusterError> {
        let started = Instant::now();
        loop {
            if let Ok(view) = self.api.cluster().await
                && let Some(leader) = view.leader()
                && leader.state == "running"
                && view.members.len() == self.running()
                && view
                    .members
                    .iter()
                    .all(|m| m.role == "leader" || m.state == "streaming" || m.state == "running")
            {
                return Ok(leader.name.clone());
            }
            if started.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: format!("the Patroni cluster to form: {:?}", self.members().await),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Members whose Patroni runs.
    fn running(&self) -> usize {
        self.members.iter().filter(|m| lock(&m.process).is_some()).count()
    }

    /// Node loss: SIGKILL of member `name`'s Patroni and its postmaster.
    pub fn kill(&self, name: &str) {
        let member = self.member(name);
        if let Some(mut child) = lock(&member.process).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster_pid(&member.data) {
            super::process::signal_tree(pid, libc::SIGKILL);
        }
    }

    /// A postmaster crash alone: SIGKILL of member `name`'s postmaster (Patroni restarts it).
    pub fn crash_postmaster(&self, name: &str) {
        if let Some(pid) = postmaster_pid(&self.member(name).data) {
            signal(pid, libc::SIGKILL);
        }
    }

    /// Starts member `name`'s Patroni (again).
    ///
    /// # Errors
    /// Why it could not be started.
    pub fn start_member(&self, name: &str) -> Result<(), ClusterError> {
        let member = self.member(name);
        let mut cmd = self.run_as.command(Path::new("patroni"), self.dir.path());
        cmd.arg(&member.config);
        let child = spawn_logged(cmd, &self.dir.path().join(format!("{name}.log")))?;
        *lock(&member.process) = Some(child);
        Ok(())
    }

    /// `patronictl switchover` to `candidate`.
    ///
    /// # Errors
    /// patronictl's failure.
    pub async fn switchover(&self, leader: &str, candidate: &str) -> Result<(), ClusterError> {
        self.patronictl(&["switchover", "--leader", leader, "--candidate", candidate, "--force"])
            .await
    }

    /// `patronictl failover` to `candidate`.
    ///
    /// # Errors
    /// patronictl's failure.
    pub async fn failover(&self, candidate: &str) -> Result<(), ClusterError> {
        self.patronictl(&["failover", "--candidate", candidate, "--force"])
            .await
    }

    async fn patronictl(&self, args: &[&str]) -> Result<(), ClusterError> {
        let mut cmd = self.run_as.command(Path::new("patronictl"), self.dir.path());
        cmd.arg("-c").arg(&self.members[0].config).args(args);
        run_tool(cmd, Duration::from_secs(60)).await
    }

    fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no Patroni member {name}"))
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(mut child) = lock(&member.process).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(pid) = postmaster_pid(&member.data) {
                super::process::signal_tree(pid, libc::SIGKILL);
            }
        }
        self.etcd.stop();
    }
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn member_yaml(
    name: &str,
    [pg_port, api_port, etcd]: [u16; 3],
    synchronous: bool,
    data: &Path,
    bindir: &Path,
    dir: &Path,
) -> String {
    let (data, bindir, dir) = (data.display(), bindir.display(), dir.display());
    format!(
        "scope: covet
name: {name}
restapi:
  listen: {LOOPBACK}:{api_port}
  connect_address: {LOOPBACK}:{api_port}
etcd3:
  hosts: {LOOPBACK}:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    synchronous_mode: {synchronous}
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_retrieve_retry_interval: 200ms
  initdb:
    - encoding: UTF8
  pg_hba:
    - local all all trust
    - host replication all {LOOPBACK}/32 trust
    - host all all {LOOPBACK}/32 trust
postgresql:
  listen: {LOOPBACK}:{pg_port}
  connect_address: {LOOPBACK}:{pg_port}
  data_dir: {data}
  bin_dir: {bindir}
  pgpass: {dir}/{name}.pgpass
  authentication:
    replication: {{username: postgres, password: x}}
    superuser: {{username: postgres, password: x}}
    rewind: {{username: postgres, password: x}}
  parameters:
    unix_socket_directories: '{dir}'
"
    )
}
