//! `covet`: the operator's command line. Reads the same configuration as the application
//! (`--config FILE`, else `COVET_CONFIG` / `COVET_PRIMARY_URL` / `COVET_REPLICA_URLS`).
//!
//! ```text
//! covet status [--json]            the cluster as a table (like `patronictl list`) or JSON
//! covet check                      exit 0 if the primary and every replica are healthy, 3 if not
//!                                  (a fenced former primary: a warning, exit 0)
//! covet classify SQL               how the classifier sees a statement (no database needed)
//! covet explain SQL                which node a statement would run on now, and why
//! covet switchover [--to NODE]     move the primary role to NODE (or the best standby), losing nothing
//! covet failover [--to NODE]       replace an unreachable primary now
//! covet audit [--file F] [--json]  failover events from the audit log (`failover.audit_log`)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use covet_replication::{NodeState, ReplicatedPool, ReplicationConfig, classify::classify, failover::FailoverEvent};

#[derive(Parser)]
#[command(name = "covet", version, about = "Operate a PostgreSQL primary and its hot standbys")]
struct Cli {
    /// TOML configuration file (default: the COVET_* environment variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every node's role, state, position and lag.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the primary and every replica are healthy (a fenced former primary is only
    /// warned about), 3 otherwise (for monitoring).
    Check,
    /// Classify a statement: class, reason, whether a hot standby may run it.
    Classify {
        /// The SQL text.
        sql: String,
    },
    /// Which node a statement would be routed to now, and why.
    Explain {
        /// The SQL text.
        sql: String,
    },
    /// Planned change of primary: fence, catch up, promote, repoint. Loses no write.
    Switchover {
        /// The standby to promote (default: the best one).
        #[arg(long)]
        to: Option<String>,
    },
    /// Replace a primary that cannot be reached, now.
    Failover {
        /// The standby to promote (default: the best one).
        #[arg(long)]
        to: Option<String>,
    },
    /// Show the failover audit log.
    Audit {
        /// The log (default: `failover.audit_log` of the configuration).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Raw JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status of `check` when something is not healthy.
const UNHEALTHY: u8 = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `println!` for a reader that may leave (`covet status | head -0`): a closed stdout means
/// nobody reads the rest, so the command goes on to its exit code instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("covet: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("covet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<ReplicationConfig, BoxError> {
    let mut config = match path {
        Some(p) => ReplicationConfig::from_toml_file(p)?,
        None => ReplicationConfig::from_env()?,
    };
    // A short-lived command never fails over on its own: only when asked to. When asked, it acts
    // whatever mode the applications run in: `covet failover` is how an operator approves a
    // failover a `supervised` application proposed (which then follows it).
    config.failover.automatic = false;
    config.failover.mode = covet_replication::config::FailoverMode::Own;
    Ok(config)
}

async fn connect(config: ReplicationConfig) -> Result<ReplicatedPool, BoxError> {
    let db = ReplicatedPool::connect_lazy(config)?;
    // Two rounds: a node's state needs a success after its first answer in some cases, and
    // lag needs the primary's position before the replicas'.
    db.manager().check_now().await;
    db.manager().check_now().await;
    Ok(db)
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let config = cli.config;
    let db = || async { connect(load_config(config.as_ref())?).await };
    match cli.command {
        Command::Status { json } => {
            let status = db().await?.status();
            if json {
                say!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                say!("{status}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let db = db().await?;
            for warning in db.status().warnings {
                say!("warning: {warning}");
            }
            let nodes = db.manager().nodes();
            // A fenced former primary is reported (the warning above says what to do) but does
            // not fail the check: the cluster serves without it.
            let bad: Vec<String> = nodes
                .iter()
                .filter(|n| !matches!(n.state, NodeState::Healthy | NodeState::Fenced))
                .map(|n| format!("{} is {}", n.id, n.state))
                .collect();
            let fenced = nodes.iter().filter(|n| n.state == NodeState::Fenced).count();
            if bad.is_empty() && fenced > 0 {
                say!("ok, but {fenced} fenced node(s) to rebuild (see the warning)");
                Ok(ExitCode::SUCCESS)
            } else if bad.is_empty() {
                say!("ok");
                Ok(ExitCode::SUCCESS)
            } else {
                say!("{}", bad.join("; "));
                Ok(ExitCode::from(UNHEALTHY))
            }
        }
        Command::Classify { sql } => {
            let kind = classify(&sql);
            say!("class: {:?}", kind.class());
            say!("reason: {}", kind.reason());
            say!("replica safe: {}", kind.is_replica_safe());
            if !kind.unknown_functions().is_empty() {
                say!(
                    "unknown functions (looked up in pg_proc at run time): {}",
                    kind.unknown_functions().join(", ")
                );
            }
            if !kind.relations().is_empty() {
                say!(
                    "relations (views among them are looked up at run time): {}",
                    kind.relations().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { sql } => {
            let (node, reason) = db().await?.explain(&sql).await?;
            say!("{node} ({})", reason.name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Switchover { to } => report(db().await?.failover().switchover(to.as_deref()).await?),
        Command::Failover { to } => report(db().await?.failover().failover(to.as_deref()).await?),
        Command::Audit { file, json } => audit(file, json, config.as_ref()),
    }
}

fn audit(file: Option<PathBuf>, json: bool, config: Option<&PathBuf>) -> Result<ExitCode, BoxError> {
    let path = match file {
        Some(f) => f,
        None => load_config(config)?
            .failover
            .audit_log
            .ok_or("no --file and no failover.audit_log in the configuration")?,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if json {
            say!("{line}");
            continue;
        }
        let e: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
        say!(
            "{} {} {} {} -> {} in {}{}",
            s(&e["started_at"]),
            s(&e["kind"]),
            s(&e["outcome"]),
            s(&e["old_primary"]),
            s(&e["new_primary"]),
            s(&e["duration"]),
            e["error"].as_str().map(|err| format!(": {err}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report(event: FailoverEvent) -> Result<ExitCode, BoxError> {
    for step in &event.steps {
        let node = step.node.as_ref().map(|n| n.as_str()).unwrap_or("");
        let mark = if step.ok { "ok " } else { "ERR" };
        say!(
            "{:>10.1?} {mark} {:<9} {node:<10} {}",
            step.after,
            step.name,
            step.detail
        );
    }
    say!(
        "{:?}: {} -> {} (timeline {}) in {:?}",
        event.outcome,
        event.old_primary,
        event.new_primary.as_ref().map_or("-", |n| n.as_str()),
        event.timeline.map_or("-".into(), |t| t.to_string()),
        event.duration
    );
    Ok(ExitCode::SUCCESS)
}
