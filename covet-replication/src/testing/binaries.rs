//! Locating the PostgreSQL server binaries.

use std::path::{Path, PathBuf};

use super::ClusterError;

/// Environment variable that names the directory holding `initdb`, `postgres` and `pg_basebackup`.
pub const BINDIR_ENV: &str = "COVET_PG_BINDIR";

/// Finds the server binaries: an explicit directory (the builder's, else `$COVET_PG_BINDIR`) and
/// nothing else, or `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin` (Debian
/// installs the client's `pg_config` without the server).
pub(crate) fn find_bindir(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let explicit = explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os(BINDIR_ENV).map(PathBuf::from));
    if let Some(dir) = explicit {
        // A wrong explicit choice is an error, not a reason to pick some other installation.
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesNotFound {
                searched: dir.display().to_string(),
            })
        };
    }
    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    candidates.extend(debian_bindirs());
    for dir in candidates {
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    if searched.is_empty() {
        searched.push("/usr/lib/postgresql/*/bin".into());
    }
    Err(ClusterError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres", "pg_basebackup"]
        .iter()
        .all(|bin| dir.join(bin).is_file())
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_bindirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}
