//! Every query the library sends to a server beyond the user's statements, with typed results.

mod check;
pub(crate) mod version;

pub(crate) use check::{Sample, check};
