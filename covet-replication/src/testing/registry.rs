//! Cleanup of cluster directories and servers that outlive their owner.
//!
//! `Drop` handles the normal and the panicking case. A cluster kept in a `static` is never
//! dropped, so an exit handler stops what is still registered; a process killed outright takes
//! its servers with it (`PR_SET_PDEATHSIG`) and the next cluster started removes its directory.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use super::{ClusterError, LocalCluster};

const PREFIX: &str = "covet-cluster-";

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Creates `<root>/covet-cluster-<pid>-XXXX`, the pid marking its owner.
pub(crate) fn create_dir(root: &Path) -> Result<tempfile::TempDir, ClusterError> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in(root)
        .map_err(|source| ClusterError::TempDir {
            path: root.to_owned(),
            source,
        })
}

pub(crate) fn register(cluster: &LocalCluster) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registering a plain `extern "C" fn` with no captured state.
        unsafe {
            libc::atexit(at_exit);
        }
    });
    live().push(cluster.dir().to_owned());
}

pub(crate) fn unregister(dir: &Path) {
    live().retain(|d| d != dir);
}

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    crate::core::lock(&LIVE)
}

extern "C" fn at_exit() {
    let dirs = std::mem::take(&mut *live());
    for dir in dirs {
        stop_and_remove(&dir);
    }
}

/// Removes directories of clusters whose owning process is gone.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        let Ok(owner) = owner.parse::<u32>() else { continue };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            stop_and_remove(&entry.path());
        }
    }
}

/// Stops the postmasters recorded in `dir/node*/postmaster.pid` and deletes `dir`.
fn stop_and_remove(dir: &Path) {
    let pids: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("postmaster.pid")).ok())
        .filter_map(|s| s.lines().next()?.trim().parse().ok())
        .filter(|pid| is_postgres(*pid))
        .collect();
    // Immediate shutdown: the postmaster takes its backends down with it; SIGKILL if it lingers.
    for (signal, wait) in [
        (libc::SIGQUIT, Duration::from_secs(5)),
        (libc::SIGKILL, Duration::from_secs(5)),
    ] {
        for &pid in &pids {
            super::process::signal(pid, signal);
        }
        let deadline = Instant::now() + wait;
        while pids.iter().any(|&pid| is_postgres(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `pid` is a live (not zombie) postgres process.
fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.contains("(postgres)") && !stat.contains(") Z "))
}
