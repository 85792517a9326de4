//! Locating the PostgreSQL server binaries.

use std::path::{Path, PathBuf};

use super::ClusterError;

/// Environment variable that names the directory holding `initdb` and `postgres`.
pub const BINDIR_ENV: &str = "COVET_PG_BINDIR";

/// Environment variable that picks a major version (`13` .. `18`) when no directory is named:
/// `/usr/lib/postgresql/<major>/bin`, else the copy `scripts/fetch-postgres.sh <major>` put in
/// [`CACHE_ENV`]'s directory.
pub const VERSION_ENV: &str = "COVET_PG_VERSION";

/// Environment variable naming the cache of `scripts/fetch-postgres.sh` (default
/// `/var/cache/covet-postgres`).
pub const CACHE_ENV: &str = "COVET_PG_CACHE";
const DEFAULT_CACHE: &str = "/var/cache/covet-postgres";

/// Finds the server binaries: an explicit directory (the builder's, else `$COVET_PG_BINDIR`) and
/// nothing else; else those of an explicit major (the builder's, else `$COVET_PG_VERSION`) and
/// nothing else; else `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin` (Debian
/// installs the client's `pg_config` without the server).
pub(crate) fn find_bindir(explicit: Option<&Path>, major: Option<u32>) -> Result<PathBuf, ClusterError> {
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
    if let Some(major) = major {
        let candidates = major_bindirs(major);
        return candidates
            .iter()
            .find(|dir| has_server(dir))
            .cloned()
            .ok_or_else(|| ClusterError::VersionNotFound {
                major,
                searched: candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
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

/// The major version of the `postgres` in `bindir`, from `postgres --version`
/// (`postgres (PostgreSQL) 13.23`, `... 18beta1`).
pub(crate) fn server_major(bindir: &Path) -> Result<u32, ClusterError> {
    let program = bindir.join("postgres");
    let out = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .map_err(ClusterError::io(format!("running {} --version", program.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.rsplit(' ')
        .next()
        .map(|v| v.trim().chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| ClusterError::Tool {
            program: program.display().to_string(),
            status: format!("{}", out.status),
            output: format!("no version in {:?}", text.trim()),
        })
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|bin| dir.join(bin).is_file())
}

/// The builder's major, else `$COVET_PG_VERSION`'s.
pub(crate) fn requested_major(version: Option<u32>) -> Result<Option<u32>, ClusterError> {
    if version.is_some() {
        return Ok(version);
    }
    let Some(value) = std::env::var_os(VERSION_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| ClusterError::BadVersion { value })
}

/// Where the binaries of `major` may be: Debian's directory, then the fetch script's cache (its
/// directories are named by full version, `13.23.0-beta.16`; the newest first).
fn major_bindirs(major: u32) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))];
    let cache = std::env::var_os(CACHE_ENV).map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    let mut cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|name| name.split('.').next())
                .is_some_and(|m| m == major.to_string())
        })
        .map(|e| e.path().join("native").join("bin"))
        .collect();
    cached.sort();
    cached.reverse();
    if cached.is_empty() {
        cached.push(cache.join(format!("{major}.*")).join("native").join("bin"));
    }
    dirs.extend(cached);
    dirs
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
