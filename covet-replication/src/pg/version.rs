//! Which PostgreSQL majors the library runs on.
//!
//! 13 is the oldest: failover repoints a standby with `ALTER SYSTEM SET primary_conninfo` and a
//! reload, which 12 applies only after a restart; the classifier's built-in table and
//! `pg_current_xact_id()` are 13's too. 18 is the newest tested; a newer server is used with a
//! warning, since nothing the library sends has been removed from PostgreSQL so far.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgConnection;

use crate::core::NodeId;
use crate::error::Error;

/// The oldest supported major.
pub const MIN_MAJOR: u32 = 13;
/// The newest major the test suites run on.
pub const MAX_TESTED_MAJOR: u32 = 18;

/// Refuses a connection to a server older than [`MIN_MAJOR`]; warns once per process about one
/// newer than [`MAX_TESTED_MAJOR`]. A server that does not report its version (a proxy) passes.
pub(crate) fn check(node: &NodeId, conn: &PgConnection) -> Result<(), Error> {
    let Some(num) = conn.server_version_num() else {
        return Ok(());
    };
    let major = num / 10_000;
    if major < MIN_MAJOR {
        return Err(Error::UnsupportedServerVersion {
            node: node.clone(),
            version: display(num),
        });
    }
    static WARNED: AtomicBool = AtomicBool::new(false);
    if major > MAX_TESTED_MAJOR && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "covet::pool",
            node = %node,
            version = %display(num),
            newest_tested = MAX_TESTED_MAJOR,
            "server is newer than any this library was tested on"
        );
    }
    Ok(())
}

/// `130023` as `13.23`.
fn display(num: u32) -> String {
    format!("{}.{}", num / 10_000, num % 10_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_read_as_people_write_them() {
        assert_eq!(super::display(120_022), "12.22");
        assert_eq!(super::display(180_004), "18.4");
    }
}
