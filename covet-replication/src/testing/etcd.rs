//! A real etcd server on loopback (one member), for Patroni and for fleets coordinated through
//! etcd. Needs `etcd` on the `PATH` (Debian: `apt-get install etcd-server`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClusterError;
use super::cluster::free_port;
use super::process::{RunAs, spawn_tied, terminate_blocking};
use crate::core::lock;

const LOOPBACK: &str = "127.0.0.1";

/// One etcd member on a free loopback port, killed (and its data removed) on drop.
#[derive(Debug)]
pub struct EtcdServer {
    /// Its own directory, when started alone.
    _dir: Option<tempfile::TempDir>,
    process: Mutex<Option<Child>>,
    port: u16,
}

impl EtcdServer {
    /// Starts etcd in a directory of its own and waits until it answers.
    ///
    /// # Errors
    /// A tool or I/O error, or [`ClusterError::Timeout`] if it does not answer within 30 s.
    pub async fn start() -> Result<Self, ClusterError> {
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("covet-etcd-")
            .tempdir()
            .map_err(ClusterError::io("creating the etcd directory"))?;
        run_as.give(dir.path())?;
        let mut server = Self::spawn(dir.path(), &run_as)?;
        server._dir = Some(dir);
        server.wait_ready(Duration::from_secs(30)).await?;
        Ok(server)
    }

    /// Starts etcd with its data in `dir/etcd`, not waiting for it.
    pub(crate) fn spawn(dir: &Path, run_as: &RunAs) -> Result<Self, ClusterError> {
        let hosts = [LOOPBACK.to_owned()];
        let (port, peer) = (free_port(&hosts)?, free_port(&hosts)?);
        let client_url = format!("http://{LOOPBACK}:{port}");
        let peer_url = format!("http://{LOOPBACK}:{peer}");
        let mut etcd = run_as.command(Path::new("etcd"), dir);
        etcd.args(["--name", "e1", "--data-dir", "etcd"])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e1={peer_url}")]);
        let process = spawn_logged(etcd, &dir.join("etcd.log"))?;
        Ok(EtcdServer {
            _dir: None,
            process: Mutex::new(Some(process)),
            port,
        })
    }

    /// Its client URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until `GET /health` says it is healthy.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        let health = format!("{}/health", self.url());
        while Instant::now() < deadline {
            let answer = client.get(&health).timeout(Duration::from_secs(1)).send().await;
            if let Ok(answer) = answer
                && let Ok(text) = answer.text().await
                && text.contains("\"true\"")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::Timeout {
            what: "etcd to answer /health".into(),
            after: timeout,
        })
    }

    /// The value of `key`, as text (`None`: no such key).
    ///
    /// # Errors
    /// [`ClusterError::Tool`] if etcd does not answer.
    #[cfg(feature = "etcd")]
    pub async fn get(&self, key: &str) -> Result<Option<String>, ClusterError> {
        let failed = |e: etcd_client::Error| ClusterError::Tool {
            program: "etcd client".into(),
            status: e.to_string(),
            output: String::new(),
        };
        let mut client = etcd_client::Client::connect([self.url()], None).await.map_err(failed)?;
        let answer = client.get(key, None).await.map_err(failed)?;
        Ok(answer
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(&self) {
        if let Some(mut process) = lock(&self.process).take() {
            terminate_blocking(&mut process);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` with its output in `log`, tied to this process's life.
pub(crate) fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child, ClusterError> {
    let file = std::fs::File::create(log).map_err(ClusterError::io("creating a log file"))?;
    let err = file.try_clone().map_err(ClusterError::io("opening a log file"))?;
    cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err));
    let program = cmd.get_program().to_string_lossy().into_owned();
    spawn_tied(cmd).map_err(|e| ClusterError::Tool {
        program,
        status: format!("could not start: {e}"),
        output: String::new(),
    })
}

/// The guarded write of `coordinated` mode (crate::ha::etcd), against a real etcd.
#[cfg(all(test, feature = "etcd"))]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use etcd_client::Client;
    use tokio_util::sync::CancellationToken;

    use super::EtcdServer;
    use crate::config::EtcdConfig;
    use crate::error::HaError;
    use crate::ha::etcd::{Fleet, Promotion, lead};

    async fn leading(fleet: &Fleet) {
        let started = Instant::now();
        while !fleet.leads() {
            assert!(started.elapsed() < Duration::from_secs(20), "{}", fleet.standing());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The guarded write is the whole guarantee of `coordinated` mode: a holder that believes
    /// it leads (its lease alive, its clock fine) records nothing once its election key is
    /// gone, nor over a record it did not read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_election_key_s_owner_records_a_promotion_and_only_over_what_it_read() {
        let etcd = EtcdServer::start().await.unwrap();
        let config = EtcdConfig::default()
            .with_endpoints([etcd.url()])
            .with_prefix("/guard")
            .with_lease_ttl(Duration::from_secs(4))
            .with_instance("a");
        let a = Arc::new(Fleet::new(&config, Duration::from_secs(1)));
        let token = CancellationToken::new();
        tokio::spawn(lead(Arc::clone(&a), token.child_token()));
        leading(&a).await;
        let p = Promotion::new("db2", 5432, "replica1", 1, "a");
        a.begin(&p, 0).await.unwrap();
        let (read, revision) = a.under_way().await.unwrap();
        assert_eq!(read.as_ref(), Some(&p));
        // A record it did not read (it read "none"): refused, and it still leads.
        let refused = a.begin(&p, 0).await.unwrap_err();
        assert!(refused.to_string().contains("another holder recorded"), "{refused}");
        a.begin(&p, revision).await.unwrap();
        assert!(a.leads());

        // The election key deleted behind its back, the lease alive: it believes it leads...
        let mut client = Client::connect([etcd.url()], None).await.unwrap();
        let deleted = client
            .delete("/guard/leader", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(deleted.deleted(), 1);
        assert!(a.leads());
        // ...but etcd records nothing for it, and its term ends.
        let (_, revision) = a.under_way().await.unwrap();
        let refused = a.begin(&p, revision).await.unwrap_err();
        assert!(refused.to_string().contains("election key is gone"), "{refused}");
        let refused = a.publish(&p).await.unwrap_err();
        assert!(matches!(refused, HaError::NotLeader { .. }), "{refused}");
        // A new term campaigns again, and leads with a new key.
        leading(&a).await;
        a.publish(&p).await.unwrap();
        assert_eq!(a.under_way().await.unwrap(), (None, 0));
        token.cancel();
    }
}
