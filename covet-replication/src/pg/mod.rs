//! What the library asks of the servers it talks to, beyond the user's statements.

pub(crate) mod version;
