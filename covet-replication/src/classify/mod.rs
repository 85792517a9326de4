//! Statement classifier: decides whether an SQL text may run on a read-only hot standby.
//!
//! [`classify`] parses the text with sqlparser's PostgreSQL dialect and returns a
//! [`QueryKind`]: its [`QueryClass`], the [`Hint`] of a leading `/* covet:... */` comment,
//! and the functions it could not vouch for. It is conservative: anything that writes,
//! locks, changes session state or calls a function with side effects is not
//! [replica safe](QueryKind::is_replica_safe), nor is text it cannot make sense of. Text
//! sqlparser does not understand is split at `;` and judged from its tokens: writes by their
//! keywords, locking clauses and write functions, queries by their `name(` calls
//! ([`QueryKind::is_parsed`] tells). A `/* covet:replica */` hint vouches only for what the
//! classifier does not know: a statement it knows to write still goes to the primary.
//! [`Classifier`] adds a bounded cache, application function lists and writes learned from
//! the standby's refusals.
//!
//! What the text alone cannot show: a view or a user function that writes is seen as a
//! read of a relation or an unknown function. Unknown functions are therefore not replica
//! safe until the router looked them up ([`QueryKind::is_replica_safe_given`]); views
//! rely on the standby refusing the write (SQLSTATE 25006) and [`Classifier::remember_write`].
//!
//! Built-in function knowledge comes from `pg_functions.tsv`, generated from `pg_proc` by
//! `scripts/gen-pg-functions.sh`, plus the hand-kept list of built-ins that need the
//! primary in `functions.rs`.

mod functions;
mod guard;
mod kind;
mod text;
mod visit;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::Weighter;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use kind::{FunctionSafety, Hint, QueryClass, QueryKind, TransactionControl, TransactionOp};

use functions::{Builtins, Configured, Resolve};
use kind::Inner;
use visit::{Analysis, Verdict};

/// Classifies one SQL text (one or more statements) with PostgreSQL's built-in function
/// knowledge only. Pure, and never panics.
///
/// ```
/// use covet_replication::{classify::{QueryClass, classify}};
///
/// let kind = classify("SELECT id, name FROM users WHERE id = $1");
/// assert_eq!(kind.class(), QueryClass::Read);
/// assert!(kind.is_replica_safe());
///
/// let kind = classify("SELECT nextval('orders_id_seq')");
/// assert_eq!(kind.class(), QueryClass::Write);
///
/// // Unknown functions are listed for the router to look up in pg_proc.
/// let kind = classify("SELECT public.order_total($1)");
/// assert_eq!(kind.unknown_functions(), ["public.order_total"]);
/// assert!(!kind.is_replica_safe());
/// ```
#[must_use]
pub fn classify(sql: &str) -> QueryKind {
    classify_with(sql, &Builtins)
}

/// The reason of a text whose classification panicked (a bug, caught in [`classify`]).
const PANICKED: &str = "classifier panicked";

fn classify_with<R: Resolve>(sql: &str, resolver: &R) -> QueryKind {
    // sqlparser is third-party code on untrusted text: a panic in it must not take the
    // caller's executor down, so it becomes an unknown (not replica safe) statement.
    let analysis = catch_unwind(AssertUnwindSafe(|| analyze_sql(sql, resolver, 0))).unwrap_or_else(|_| {
        tracing::error!(sql, "statement classifier panicked; treating the text as unknown");
        Analysis {
            verdict: Some(Verdict::new(QueryClass::Unknown, PANICKED)),
            parsed: false,
            ..Analysis::default()
        }
    });
    into_kind(analysis, text::leading_hint(sql))
}

/// Parses and classifies `sql`; `depth` counts SQL texts nested in function arguments.
pub(crate) fn analyze_sql<R: Resolve>(sql: &str, resolver: &R, depth: u8) -> Analysis {
    if let Some(reason) = guard::too_deep(sql) {
        return Analysis {
            verdict: Some(Verdict::new(QueryClass::Unknown, reason)),
            parsed: false,
            ..Analysis::default()
        };
    }
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => visit::analyze_statements(&statements, resolver, depth),
        Err(_) => text::analyze_unparsed(sql, resolver, depth),
    }
}

fn into_kind(analysis: Analysis, hint: Option<Hint>) -> QueryKind {
    let Analysis {
        verdict,
        first_transaction,
        transaction_replica_safe,
        mut unknown_functions,
        mut relations,
        statements,
        parsed,
        procedure,
        changes_catalog,
    } = analysis;
    let verdict = verdict.unwrap_or_else(|| {
        if parsed {
            Verdict::new(QueryClass::Read, "no statement")
        } else {
            Verdict::new(QueryClass::Unknown, "could not be parsed")
        }
    });
    if verdict.class == QueryClass::Write {
        // Writes go to the primary whatever the functions and relations are.
        unknown_functions.clear();
        relations.clear();
    }
    QueryKind::from_inner(Inner {
        class: verdict.class,
        reason: verdict.reason,
        hint,
        transaction: first_transaction,
        transaction_replica_safe,
        unknown_functions,
        relations,
        statements,
        parsed,
        procedure,
        changes_catalog,
    })
}

/// Counters of a [`Classifier`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// Texts classified without the cache (cache misses and uncacheable texts).
    pub classified: u64,
    /// Of those, texts the SQL parser could not parse (classified from their tokens).
    pub parse_failures: u64,
    /// Texts marked as writes by [`Classifier::remember_write`].
    pub learned_writes: u64,
}

/// The default number of cached texts of [`Classifier::default`].
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// A cached entry weighs one unit per started KiB of SQL text, so that the capacity bounds
/// memory too: `capacity` entries of up to 1 KiB, fewer of longer texts.
const WEIGHT_UNIT_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, Default)]
struct SqlWeighter;

impl Weighter<Box<str>, QueryKind> for SqlWeighter {
    fn weight(&self, sql: &Box<str>, _: &QueryKind) -> u64 {
        (sql.len() / WEIGHT_UNIT_BYTES + 1) as u64
    }
}

type Cache = quick_cache::sync::Cache<Box<str>, QueryKind, SqlWeighter>;

/// A classifier with a bounded cache keyed by SQL text, the application's function lists,
/// and writes learned at run time. Share it between connections (`Arc<Classifier>`):
/// every method takes `&self`.
///
/// ```
/// use covet_replication::{classify::{Classifier, QueryClass}};
///
/// let classifier = Classifier::new(10_000)
///     .with_read_only_functions(["public.order_total"])
///     .with_write_functions(["audit.log_access"]);
/// assert!(classifier.classify("SELECT public.order_total($1)").is_replica_safe());
/// assert_eq!(classifier.classify("SELECT audit.log_access(1)").class(), QueryClass::Write);
///
/// // The standby refused it with SQLSTATE 25006: a view over a write function, say.
/// classifier.remember_write("SELECT * FROM pending_jobs_claim");
/// assert!(!classifier.classify("SELECT * FROM pending_jobs_claim").is_replica_safe());
/// ```
pub struct Classifier {
    cache: Cache,
    functions: Configured,
    classified: AtomicU64,
    parse_failures: AtomicU64,
    learned_writes: AtomicU64,
}

impl Classifier {
    /// A classifier caching about `capacity` texts (texts over 1 KiB count once per KiB).
    /// `0` disables the cache.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Cache::with_weighter(capacity, capacity as u64, SqlWeighter),
            functions: Configured::default(),
            classified: AtomicU64::new(0),
            parse_failures: AtomicU64::new(0),
            learned_writes: AtomicU64::new(0),
        }
    }

    /// Adds application functions known to be read-only (no writes, no session effects),
    /// e.g. `public.order_total` or `order_total`, matched ignoring case. An entry `s.f`
    /// matches `s.f` and unqualified `f`; an entry `f` matches `f` in any schema. Built-ins
    /// that need the primary and configured write functions still win.
    pub fn with_read_only_functions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.functions.read_only.extend(names);
        self.cache.clear();
        self
    }

    /// Adds application functions known to write: any text calling one is a write. Names
    /// match as in [`with_read_only_functions`](Self::with_read_only_functions).
    pub fn with_write_functions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.functions.write.extend(names);
        self.cache.clear();
        self
    }

    /// Classifies `sql`, from the cache when it was seen before.
    pub fn classify(&self, sql: &str) -> QueryKind {
        if let Some(kind) = self.cache.get(sql) {
            return kind;
        }
        let kind = classify_with(sql, &self.functions);
        self.classified.fetch_add(1, Ordering::Relaxed);
        if !kind.is_parsed() {
            self.parse_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sql, reason = kind.reason(), "statement not parsed");
        }
        self.cache.insert(sql.into(), kind.clone());
        kind
    }

    /// Records that `sql` writes, e.g. because a standby refused it with SQLSTATE 25006
    /// (a view or function the text did not reveal). Later [`classify`](Self::classify)
    /// calls return a [`QueryClass::Write`] for it while it stays in the cache; after an
    /// eviction the standby refuses it once more and the router calls this again.
    pub fn remember_write(&self, sql: &str) {
        let known = self.classify(sql);
        let inner = known.inner();
        if inner.class == QueryClass::Write {
            return;
        }
        let learned = QueryKind::from_inner(Inner {
            class: QueryClass::Write,
            reason: "learned: a standby refused it as a write".into(),
            hint: inner.hint,
            transaction: inner.transaction,
            transaction_replica_safe: false,
            unknown_functions: Vec::new(),
            relations: Vec::new(),
            statements: inner.statements,
            parsed: inner.parsed,
            procedure: inner.procedure,
            changes_catalog: inner.changes_catalog,
        });
        self.learned_writes.fetch_add(1, Ordering::Relaxed);
        self.cache.insert(sql.into(), learned);
    }

    /// How many texts the SQL parser could not parse (counted once per cache miss).
    pub fn parse_failures(&self) -> u64 {
        self.parse_failures.load(Ordering::Relaxed)
    }

    /// All counters.
    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            classified: self.classified.load(Ordering::Relaxed),
            parse_failures: self.parse_failures(),
            learned_writes: self.learned_writes.load(Ordering::Relaxed),
        }
    }
}

impl Default for Classifier {
    /// A classifier caching [`DEFAULT_CACHE_CAPACITY`] texts, without function lists.
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_CAPACITY)
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("cached", &self.cache.len())
            .field("functions", &self.functions)
            .field("stats", &self.stats())
            .finish()
    }
}
