/// An HA manager's API could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaError {
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client: {source}")]
    Client {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// An endpoint did not answer, or not with what was expected.
    #[error("{endpoint}: {source}")]
    Request {
        /// The endpoint asked.
        endpoint: String,
        /// reqwest's error (connection, status, body).
        #[source]
        source: reqwest::Error,
    },
    /// No member's API answered by the time the servers' checks did (and a little after).
    #[error("no Patroni member answered GET /cluster within {after:?} of the servers' checks")]
    Late {
        /// How long it was waited for after the checks.
        after: std::time::Duration,
    },
    /// No endpoint is configured.
    #[error("no endpoint configured")]
    NoEndpoint,
    /// An etcd request failed.
    #[cfg(feature = "etcd")]
    #[error("etcd {op}: {source}")]
    Etcd {
        /// What was asked (`connect`, `lease grant`, `txn`, ...).
        op: &'static str,
        /// etcd-client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd {op}: no answer within {after:?}")]
    Timeout {
        /// What was asked.
        op: &'static str,
        /// How long it waited (`health.timeout`).
        after: std::time::Duration,
    },
    /// This process does not hold the fleet's etcd lease, so it may not act for the fleet.
    #[error("this process does not lead the fleet: {standing}")]
    NotLeader {
        /// Where it stands: who leads, or why etcd cannot be reached.
        standing: String,
    },
    /// A record under the fleet's prefix is not what this library writes there.
    #[error("etcd key {key}: {source}")]
    Record {
        /// The key.
        key: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}
