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
    /// No endpoint is configured.
    #[error("no endpoint configured")]
    NoEndpoint,
}
