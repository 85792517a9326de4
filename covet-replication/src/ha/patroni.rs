//! Patroni's REST API: `GET /cluster` names every member, its role, state and timeline.

use std::time::Duration;

use serde::Deserialize;

use crate::error::HaError;

/// What `GET /cluster` says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ClusterView {
    pub members: Vec<Member>,
}

/// One member of a Patroni cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Member {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`, ...
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `crashed`, ...
    pub state: String,
    /// From its `conn_url`: missing for a member that has none (yet).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeline: Option<u32>,
}

impl ClusterView {
    /// The member holding the leader lock.
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.role == "leader")
    }
}

/// A client of one Patroni cluster's REST endpoints (any member's API serves `/cluster`).
#[derive(Debug, Clone)]
pub(crate) struct Patroni {
    client: reqwest::Client,
    endpoints: Vec<String>,
}

impl Patroni {
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, HaError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|source| HaError::Client { source })?;
        Ok(Patroni {
            client,
            endpoints: endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect(),
        })
    }

    /// `GET /cluster`, asked of every endpoint at once: the first answer wins (a member busy
    /// demoting itself may answer its API late, just when the answer matters).
    pub async fn cluster(&self) -> Result<ClusterView, HaError> {
        if self.endpoints.is_empty() {
            return Err(HaError::NoEndpoint);
        }
        let asks = self.endpoints.iter().map(|endpoint| {
            Box::pin(async move {
                let answer = async {
                    self.client
                        .get(format!("{endpoint}/cluster"))
                        .send()
                        .await?
                        .error_for_status()?
                        .json::<ClusterView>()
                        .await
                };
                answer.await.map_err(|source| HaError::Request {
                    endpoint: endpoint.clone(),
                    source,
                })
            })
        });
        match futures::future::select_ok(asks).await {
            Ok((view, _)) => Ok(view),
            Err(last) => Err(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_patroni_3_answers() {
        let body = r#"{"members": [
            {"name": "node1", "role": "replica", "state": "streaming", "api_url": "http://127.0.0.1:8009/patroni",
             "host": "127.0.0.1", "port": 5441, "timeline": 2, "lag": 0},
            {"name": "node2", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8010/patroni",
             "host": "127.0.0.1", "port": 5442, "timeline": 2},
            {"name": "node3", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:8011/patroni",
             "host": "127.0.0.1", "port": 5443, "lag": "unknown"}
        ], "scope": "covet"}"#;
        let view: ClusterView = serde_json::from_str(body).unwrap();
        assert_eq!(
            view.leader().map(|m| (m.name.as_str(), m.port)),
            Some(("node2", Some(5442)))
        );
        assert_eq!(view.members[2].timeline, None);
        // A member without a conn_url has no address: it still parses.
        let bare: ClusterView =
            serde_json::from_str(r#"{"members": [{"name": "n4", "role": "replica", "state": "starting"}]}"#).unwrap();
        assert_eq!((bare.members[0].host.as_deref(), bare.members[0].port), (None, None));
        let leaderless: ClusterView = serde_json::from_str(r#"{"members": []}"#).unwrap();
        assert_eq!(leaderless.leader(), None);
    }
}
