//! Running PostgreSQL processes as the right OS user, and making sure they die with us.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::ClusterError;

/// The OS user PostgreSQL runs as when we are root (it refuses to run as root).
const SERVER_USER: &str = "postgres";

/// Who the server processes run as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunAs {
    /// Ourselves: we are not root.
    Current,
    /// Another user: we are root and switch to it in the child.
    User { uid: u32, gid: u32 },
}

impl RunAs {
    pub(crate) fn detect() -> Result<Self, ClusterError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Self::Current);
        }
        let name = CString::new(SERVER_USER).map_err(|_| ClusterError::NoServerUser {
            user: SERVER_USER.into(),
        })?;
        // SAFETY: `name` is a valid C string; the returned record is read before any other getpw* call.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(ClusterError::NoServerUser {
                user: SERVER_USER.into(),
            });
        }
        // SAFETY: non-null pointer to a passwd record owned by libc.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(Self::User { uid, gid })
    }

    /// Makes `path` owned by the server user, so that it can write there.
    pub(crate) fn give(&self, path: &Path) -> Result<(), ClusterError> {
        match *self {
            Self::Current => Ok(()),
            Self::User { uid, gid } => {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| ClusterError::TempDir {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }

    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null()).env_remove("PGDATA");
        if let Self::User { uid, gid } = *self {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// [`command`](Self::command), run in the network namespace `netns` (a `/run/netns` file).
    /// Entering it needs root, so the child enters first and switches user after, itself:
    /// std would switch before any `pre_exec` hook runs.
    pub(crate) fn command_in(&self, program: &Path, cwd: &Path, netns: &Path) -> Result<Command, ClusterError> {
        let Self::User { uid, gid } = *self else {
            return Err(ClusterError::NetworkNeedsRoot);
        };
        let ns = std::fs::File::open(netns).map_err(ClusterError::io(format!("opening {}", netns.display())))?;
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null()).env_remove("PGDATA");
        // SAFETY: setns, setgroups, setgid and setuid are async-signal-safe; the closure
        // allocates nothing. The namespace file is opened close-on-exec, so the server keeps no fd.
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::AsRawFd;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// Runs a short-lived tool (initdb) to completion, with a timeout.
pub(crate) async fn run_tool(mut cmd: Command, timeout: Duration) -> Result<(), ClusterError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let tool_error = |status: String, output: String| ClusterError::Tool {
        program: program.clone(),
        status,
        output,
    };
    let child = cmd
        .spawn()
        .map_err(|e| tool_error(format!("could not start: {e}"), String::new()))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ClusterError::Timeout {
            what: format!("`{program}` to finish"),
            after: timeout,
        })?
        .map_err(|e| tool_error(format!("could not wait: {e}"), String::new()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(tool_error(out.status.to_string(), tail(&text, 20)))
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that it is SIGKILLed when this process dies, however it dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so every server is
/// forked by one thread that lives as long as the process.
pub(crate) fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: prctl and getppid are async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("covet-cluster-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the cluster spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = spawner
        .lock()
        .map(|tx| tx.send((cmd, reply_tx)).is_ok())
        .unwrap_or(false);
    if !sent {
        return Err(std::io::Error::other("cluster spawner thread is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("cluster spawner thread is gone"))?
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; pid comes from a Child we own.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Sends `signal` to `pid` and then to each of its children: a postmaster and its backends
/// (every backend leads a process group of its own, so the postmaster's group is not enough).
pub(crate) fn signal_tree(pid: u32, sig: libc::c_int) {
    signal(pid, sig);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            signal(child, sig);
        }
    }
}

/// Waits for `child` to exit, polling (the child is owned by a std Mutex, not by tokio).
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`wait_exit`] for `Drop` and exit handlers.
pub(crate) fn wait_exit_blocking(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops a server for good: immediate shutdown (SIGQUIT), then SIGKILL if it lingers.
pub(crate) fn terminate_blocking(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGQUIT);
    if wait_exit_blocking(child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
