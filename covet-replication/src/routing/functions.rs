//! Learning whether an application's own functions may run on a standby, from `pg_proc`.
//!
//! Like pgpool-II: a function the classifier does not know is looked up once on the primary and
//! the answer cached. `VOLATILE` functions may write, so they run on the primary; `STABLE` and
//! `IMMUTABLE` ones cannot modify the database. The configuration's `read_only_functions` and
//! `write_functions` lists win over the catalog.

use std::collections::HashSet;

use quick_cache::sync::Cache;
use sqlx::PgPool;

use crate::classify::{FunctionSafety, QueryKind};
use crate::config::{RoutingConfig, UnknownFunctionPolicy};

#[derive(Debug)]
pub(crate) struct FunctionCatalog {
    policy: UnknownFunctionPolicy,
    read_only: HashSet<String>,
    write: HashSet<String>,
    learned: Cache<String, FunctionSafety>,
}

impl FunctionCatalog {
    pub fn new(cfg: &RoutingConfig) -> Self {
        let norm = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        FunctionCatalog {
            policy: cfg.unknown_functions,
            read_only: norm(&cfg.read_only_functions),
            write: norm(&cfg.write_functions),
            learned: Cache::new(10_000),
        }
    }

    /// What is known without a database round trip.
    fn known(&self, name: &str) -> Option<FunctionSafety> {
        let bare = name.rsplit('.').next().unwrap_or(name);
        if self.write.contains(name) || self.write.contains(bare) {
            return Some(FunctionSafety::PrimaryOnly);
        }
        if self.read_only.contains(name) || self.read_only.contains(bare) {
            return Some(FunctionSafety::ReplicaSafe);
        }
        match self.policy {
            UnknownFunctionPolicy::Primary => Some(FunctionSafety::PrimaryOnly),
            UnknownFunctionPolicy::Replica => Some(FunctionSafety::ReplicaSafe),
            _ => self.learned.get(name),
        }
    }

    /// Whether `kind` may run on a replica, looking up its unknown functions on `primary` when
    /// needed. A failed lookup answers "primary": we never guess towards the replica.
    pub async fn replica_safe(&self, kind: &QueryKind, primary: &PgPool) -> bool {
        if kind.is_replica_safe() {
            return true;
        }
        if kind.unknown_functions().is_empty() {
            return false;
        }
        let missing: Vec<String> = kind
            .unknown_functions()
            .iter()
            .filter(|f| self.known(f).is_none())
            .cloned()
            .collect();
        if !missing.is_empty()
            && let Err(error) = self.learn(&missing, primary).await
        {
            tracing::warn!(target: "covet::routing", %error, functions = ?missing, "pg_proc lookup failed; using the primary");
            return false;
        }
        kind.is_replica_safe_given(|f| self.known(f))
    }

    async fn learn(&self, names: &[String], primary: &PgPool) -> Result<(), sqlx::Error> {
        let bare: Vec<&str> = names.iter().map(|n| n.rsplit('.').next().unwrap_or(n)).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT n.nspname::text, p.proname::text, p.provolatile::text \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = ANY($1)",
        )
        .bind(&bare)
        .fetch_all(primary)
        .await?;
        for name in names {
            let (schema, func) = match name.rsplit_once('.') {
                Some((s, f)) => (Some(s), f),
                None => (None, name.as_str()),
            };
            // Every overload in every matching schema must be safe: we cannot resolve the
            // search_path or argument types here. No match at all: the primary.
            let mut matches = rows
                .iter()
                .filter(|(s, f, _)| f == func && schema.is_none_or(|want| want == s));
            let first = matches.next();
            let safe = first.is_some()
                && first.into_iter().chain(matches).all(|(_, _, v)| {
                    FunctionSafety::from_provolatile(v.chars().next().unwrap_or('v')) == FunctionSafety::ReplicaSafe
                });
            let verdict = if safe {
                FunctionSafety::ReplicaSafe
            } else {
                FunctionSafety::PrimaryOnly
            };
            tracing::debug!(target: "covet::routing", function = %name, ?verdict, "learned function volatility");
            self.learned.insert(name.clone(), verdict);
        }
        Ok(())
    }
}
