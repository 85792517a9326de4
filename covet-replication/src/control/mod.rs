//! The control plane: the health loop, lag, failover. It writes the nodes' health views and
//! the topology in the cluster snapshot; it never imports the data plane.

pub(crate) mod callbacks;
pub(crate) mod failover;
pub(crate) mod health;
pub(crate) mod lag;
