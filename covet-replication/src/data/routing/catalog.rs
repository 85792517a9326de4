//! What the text of a statement cannot show, learned from the primary's catalog.
//!
//! Functions, like pgpool-II: a function the classifier does not know is looked up once in
//! `pg_proc` and the answer cached. `VOLATILE` functions may write, so they run on the primary;
//! `STABLE` and `IMMUTABLE` ones cannot modify the database. The configuration's
//! `read_only_functions` and `write_functions` lists win over the catalog.
//!
//! Views: a `SELECT` from a view runs the view's definition, which may call a function a
//! standby refuses (`pg_current_xact_id()`, `nextval`, a volatile function of the
//! application). Each relation a read names is looked up once in `pg_class`; a view's
//! definition (`pg_get_viewdef`) is classified like any statement, its own functions and views
//! included.
//!
//! What was learned may go stale (`CREATE OR REPLACE FUNCTION` making a `STABLE` function a
//! writing `VOLATILE` one): DDL through the handle forgets everything, and an answer is trusted
//! for `routing.catalog_ttl` only, for DDL made elsewhere.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use quick_cache::sync::Cache;
use sqlx::PgPool;

use crate::classify::{Classifier, FunctionSafety, QueryKind};
use crate::config::{RoutingConfig, UnknownFunctionPolicy};
use crate::pg;

/// Views over views are followed this deep; deeper ones go to the primary.
const MAX_VIEW_DEPTH: u8 = 8;

/// An answer of the catalog, and when it was given.
#[derive(Debug, Clone, Copy)]
struct Learned<T> {
    value: T,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Relation {
    safe: bool,
    view: bool,
}

#[derive(Debug)]
pub(crate) struct Catalog {
    policy: UnknownFunctionPolicy,
    read_only: HashSet<String>,
    write: HashSet<String>,
    learned: Cache<String, Learned<FunctionSafety>>,
    /// Relation name -> whether reading it may happen on a standby, and whether it is a view.
    relations: Cache<String, Learned<Relation>>,
    /// How long a learned answer is trusted.
    ttl: Duration,
    /// A lookup waits no longer (the primary may be down; the statement then goes there).
    lookup_timeout: Duration,
}

impl Catalog {
    pub fn new(cfg: &RoutingConfig, lookup_timeout: Duration) -> Self {
        let norm = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        Catalog {
            policy: cfg.unknown_functions,
            read_only: norm(&cfg.read_only_functions),
            write: norm(&cfg.write_functions),
            learned: Cache::new(10_000),
            relations: Cache::new(10_000),
            ttl: cfg.catalog_ttl,
            lookup_timeout,
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
            _ => self.fresh(self.learned.get(name)),
        }
    }

    /// The value of `entry`, unless it is older than the TTL.
    fn fresh<T>(&self, entry: Option<Learned<T>>) -> Option<T> {
        entry.filter(|e| e.at.elapsed() < self.ttl).map(|e| e.value)
    }

    fn relation(&self, name: &str) -> Option<Relation> {
        self.fresh(self.relations.get(name))
    }

    /// Forgets everything learned: DDL ran, and any answer may be stale.
    pub fn forget(&self) {
        self.learned.clear();
        self.relations.clear();
    }

    /// Whether `kind` is taken for a read on the strength of answers learned from the catalog
    /// (a function's volatility, a view's definition), which DDL made elsewhere can have made
    /// stale: run on the primary, such a read is counted as a possible write.
    pub fn rests_on_learned(&self, kind: &QueryKind) -> bool {
        let configured = |f: &String| {
            let bare = f.rsplit('.').next().unwrap_or(f);
            [f.as_str(), bare]
                .iter()
                .any(|n| self.read_only.contains(*n) || self.write.contains(*n))
        };
        self.policy != UnknownFunctionPolicy::Replica
            && (kind.unknown_functions().iter().any(|f| !configured(f))
                || kind
                    .relations()
                    .iter()
                    .any(|r| self.relation(r).is_some_and(|r| r.view)))
    }

    /// Whether `kind` may run on a replica, looking up its unknown functions and the views it
    /// reads on `primary` when needed. A failed lookup answers "primary": we never guess
    /// towards the replica. With `unknown_functions = "replica"` the application vouches for
    /// its functions and views alike, and nothing is looked up.
    pub async fn replica_safe(&self, kind: &QueryKind, primary: &PgPool, classifier: &Classifier) -> bool {
        self.safe_at(kind, primary, classifier, 0).await
    }

    /// [`replica_safe`](Self::replica_safe) for a statement or, at `depth` > 0, a view's
    /// definition.
    async fn safe_at(&self, kind: &QueryKind, primary: &PgPool, classifier: &Classifier, depth: u8) -> bool {
        if !self.functions_safe(kind, primary).await {
            return false;
        }
        if self.policy == UnknownFunctionPolicy::Replica || kind.relations().is_empty() {
            return true;
        }
        match self.relations_known(kind.relations()) {
            Some(safe) => safe,
            None => self.learn_relations(kind.relations(), primary, classifier, depth).await,
        }
    }

    /// `Some(safe)` when every relation's verdict is cached.
    fn relations_known(&self, names: &[String]) -> Option<bool> {
        let mut all = true;
        for name in names {
            all &= self.relation(name)?.safe;
        }
        Some(all)
    }

    /// Looks the relations up in `pg_class`; classifies the definitions of views among them.
    fn learn_relations<'a>(
        &'a self,
        names: &'a [String],
        primary: &'a PgPool,
        classifier: &'a Classifier,
        depth: u8,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let missing: Vec<&str> = names
                .iter()
                .filter(|n| self.relation(n).is_none())
                .map(String::as_str)
                .collect();
            let bare: Vec<&str> = missing.iter().map(|n| n.rsplit('.').next().unwrap_or(n)).collect();
            let rows = match self.bounded(pg::catalog::relations(primary, &bare)).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(target: "covet::routing", %error, relations = ?missing, "pg_class lookup failed; using the primary");
                    return false;
                }
            };
            for name in missing {
                let (schema, relation) = match name.rsplit_once('.') {
                    Some((s, r)) => (Some(s), r),
                    None => (None, name),
                };
                // Every relation of that name in any matching schema must be safe: we cannot
                // resolve the search_path here. No match: not a relation (a CTE), nothing runs.
                let mut safe = true;
                let mut view = false;
                for found in rows
                    .iter()
                    .filter(|r| r.name == relation && schema.is_none_or(|want| want == r.schema))
                {
                    let Some(definition) = &found.view_definition else {
                        continue;
                    };
                    view = true;
                    safe = depth < MAX_VIEW_DEPTH
                        && self
                            .safe_at(&classifier.classify(definition), primary, classifier, depth + 1)
                            .await;
                    if !safe {
                        break;
                    }
                }
                tracing::debug!(target: "covet::routing", relation = %name, safe, "learned relation");
                self.relations.insert(
                    name.to_owned(),
                    Learned {
                        value: Relation { safe, view },
                        at: Instant::now(),
                    },
                );
            }
            self.relations_known(names).unwrap_or(false)
        })
    }

    async fn bounded<T>(&self, lookup: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, sqlx::Error> {
        tokio::time::timeout(self.lookup_timeout, lookup)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Whether `kind`'s functions let it run on a replica (relations aside).
    async fn functions_safe(&self, kind: &QueryKind, primary: &PgPool) -> bool {
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
        let rows = self.bounded(pg::catalog::functions(primary, &bare)).await?;
        for name in names {
            let (schema, func) = match name.rsplit_once('.') {
                Some((s, f)) => (Some(s), f),
                None => (None, name.as_str()),
            };
            // Every overload in every matching schema must be safe: we cannot resolve the
            // search_path or argument types here. No match at all: the primary.
            let mut matches = rows
                .iter()
                .filter(|f| f.name == func && schema.is_none_or(|want| want == f.schema));
            let first = matches.next();
            let safe = first.is_some()
                && first.into_iter().chain(matches).all(|f| {
                    FunctionSafety::from_provolatile(f.volatility.chars().next().unwrap_or('v'))
                        == FunctionSafety::ReplicaSafe
                });
            let verdict = if safe {
                FunctionSafety::ReplicaSafe
            } else {
                FunctionSafety::PrimaryOnly
            };
            tracing::debug!(target: "covet::routing", function = %name, ?verdict, "learned function volatility");
            self.learned.insert(
                name.clone(),
                Learned {
                    value: verdict,
                    at: Instant::now(),
                },
            );
        }
        Ok(())
    }
}
