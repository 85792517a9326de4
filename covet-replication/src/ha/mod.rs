//! What HA managers say about the cluster they manage (Patroni's REST API), and what a fleet of
//! processes agreed on through etcd.

#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod patroni;
