//! What HA managers say about the cluster they manage: Patroni's REST API.

pub(crate) mod patroni;
