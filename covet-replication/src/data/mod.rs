//! The data plane: where each statement runs (routing), what a session promises (sessions),
//! and running it (the executor). It reads the cluster snapshot and reports failures through
//! it; it never imports the control plane.

pub(crate) mod executor;
pub(crate) mod routing;
pub(crate) mod session;
