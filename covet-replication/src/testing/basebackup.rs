//! A standby's data directory from a running primary, with the low-level backup API and a file
//! copy: no `pg_basebackup`, which the npm builds of other majors lack and which only supports
//! servers up to its own major.

use std::io::ErrorKind;
use std::path::Path;

use sqlx::PgConnection;

use super::ClusterError;
use super::process::RunAs;

/// `server_version_num` of the first major whose backup functions are `pg_backup_start`/`_stop`
/// (13 and 14 name them `pg_start_backup`/`pg_stop_backup` and take an `exclusive` flag).
const BACKUP_START_RENAMED: u32 = 150_000;

/// Entries of a data directory a backup leaves out (the directories themselves are kept, empty):
/// runtime state of the running server, and WAL, which the standby streams from its slot.
const SKIP_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];
const SKIP_FILES: &[&str] = &["postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"];

/// Copies the data directory `src` of the primary behind `conn` into the new directory `dst`,
/// between `pg_backup_start` and `pg_backup_stop`, and writes the `backup_label` the standby
/// starts from. The caller creates the slot (reserving WAL) before and configures recovery after.
pub(crate) async fn base_backup(
    conn: &mut PgConnection,
    node: usize,
    src: &Path,
    dst: &Path,
    run_as: RunAs,
) -> Result<(), ClusterError> {
    let sql_err = |source| ClusterError::Sql { node, source };
    let version = conn.server_version_num().unwrap_or(0);
    let (start, stop) = if version >= BACKUP_START_RENAMED {
        (
            "SELECT pg_backup_start($1, true)::text",
            "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup($1, true, false)::text",
            "SELECT labelfile, spcmapfile FROM pg_stop_backup(false, false)",
        )
    };
    sqlx::query_scalar::<_, String>(start)
        .bind(format!("covet standby {node}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_err)?;
    let (from, to) = (src.to_owned(), dst.to_owned());
    let copied = tokio::task::spawn_blocking(move || copy_tree(&from, &to, run_as, true))
        .await
        .map_err(|e| ClusterError::Io {
            context: "copying the primary's data directory".into(),
            source: std::io::Error::other(e),
        });
    // Stop the backup whatever happened to the copy: a running backup blocks the next one on 13-14.
    let labels: Result<(String, Option<String>), _> = sqlx::query_as(stop).fetch_one(&mut *conn).await;
    copied??;
    let (label, spcmap) = labels.map_err(sql_err)?;
    write_owned(&dst.join("backup_label"), &label, run_as)?;
    if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
        write_owned(&dst.join("tablespace_map"), &map, run_as)?;
    }
    Ok(())
}

/// Writes `text` to a new file owned by the server's OS user.
pub(crate) fn write_owned(path: &Path, text: &str, run_as: RunAs) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(ClusterError::io(format!("writing {}", path.display())))?;
    run_as.give(path)
}

/// Copies a directory tree as it changes underneath: a file the server removed meanwhile is
/// skipped (WAL replay from the backup's start recreates whatever mattered).
fn copy_tree(src: &Path, dst: &Path, run_as: RunAs, top: bool) -> Result<(), ClusterError> {
    let io = |what: &str, p: &Path| ClusterError::io(format!("{what} {}", p.display()));
    let mode = std::fs::metadata(src).map_err(io("reading", src))?.permissions();
    make_dir(dst, &mode, run_as)?;
    for entry in std::fs::read_dir(src).map_err(io("listing", src))? {
        let entry = entry.map_err(io("listing", src))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let (from, to) = (entry.path(), dst.join(&*name));
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if top && SKIP_CONTENTS.contains(&&*name) {
                make_dir(&to, &mode, run_as)?;
                if name == "pg_wal" {
                    make_dir(&to.join("archive_status"), &mode, run_as)?;
                }
            } else if name != "pgsql_tmp" {
                match copy_tree(&from, &to, run_as, false) {
                    Err(ClusterError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                    other => other?,
                }
            }
        } else if kind.is_file() && !(top && SKIP_FILES.contains(&&*name)) {
            match std::fs::copy(&from, &to) {
                Ok(_) => run_as.give(&to)?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("copying", &from)(e)),
            }
        }
    }
    Ok(())
}

/// A new directory with `mode`, owned by the server's OS user.
fn make_dir(dir: &Path, mode: &std::fs::Permissions, run_as: RunAs) -> Result<(), ClusterError> {
    std::fs::create_dir(dir).map_err(ClusterError::io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, mode.clone())
        .map_err(ClusterError::io(format!("setting the mode of {}", dir.display())))?;
    run_as.give(dir)
}
