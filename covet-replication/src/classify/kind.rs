//! The classifier's verdict: [`QueryKind`] and the small types it exposes.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// What a statement (or every statement of a multi-statement string, combined) does.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryClass {
    /// Only reads: may run on a hot standby unless it calls functions the classifier
    /// does not know (see [`QueryKind::unknown_functions`]).
    Read,
    /// Writes, takes row or table locks, or has another effect that needs the primary.
    Write,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `SET TRANSACTION`, ... (see
    /// [`QueryKind::transaction`]).
    TransactionControl,
    /// Changes or uses the connection's session state (`SET`, `RESET`, `LISTEN`, `PREPARE`,
    /// `EXECUTE`, `DISCARD`, `DECLARE`/`FETCH`/`CLOSE`, `CREATE TEMP TABLE`, ...): it must run
    /// on the connection whose state it touches, which is the primary's.
    SessionState,
    /// The text could not be parsed and its leading keyword says nothing useful.
    Unknown,
}

impl QueryClass {
    /// Which class wins when a multi-statement string mixes classes: the one that needs
    /// the primary most.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            Self::Read => 0,
            Self::TransactionControl => 1,
            Self::SessionState => 2,
            Self::Unknown => 3,
            Self::Write => 4,
        }
    }
}

/// A routing hint given by a leading `/* covet:primary */` or `/* covet:replica */` comment.
///
/// `Replica` can only vouch for what the classifier does not know (unknown functions,
/// unparseable text): a statement it knows to write still goes to the primary.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* covet:primary */`: always run on the primary.
    Primary,
    /// `/* covet:replica */`: may run on a standby unless the classifier knows it writes.
    Replica,
}

/// What the router learned about a function, e.g. from `pg_proc.provolatile`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionSafety {
    /// Has no side effects a standby would refuse or that matter: may run on a standby.
    ReplicaSafe,
    /// May write or have session side effects: run on the primary.
    PrimaryOnly,
}

impl FunctionSafety {
    /// Maps `pg_proc.provolatile` of a user function: `IMMUTABLE` (`'i'`) and `STABLE`
    /// (`'s'`) functions cannot modify the database, so they are replica safe; `VOLATILE`
    /// (`'v'`) ones and anything else may, so they are not.
    pub fn from_provolatile(provolatile: char) -> Self {
        match provolatile {
            'i' | 's' => Self::ReplicaSafe,
            _ => Self::PrimaryOnly,
        }
    }
}

/// The kind of a transaction-control statement.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionOp {
    /// `BEGIN` or `START TRANSACTION`.
    Begin,
    /// `COMMIT` or `END`.
    Commit,
    /// `ROLLBACK` or `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint,
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint,
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackToSavepoint,
    /// `SET TRANSACTION ...` (for the current transaction only).
    SetTransaction,
    /// Two-phase commit: `PREPARE TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED`.
    TwoPhase,
}

/// Details of a transaction-control statement.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransactionControl {
    /// What the statement does.
    pub op: TransactionOp,
    /// `READ ONLY` was given (`BEGIN READ ONLY`, `SET TRANSACTION READ ONLY`).
    pub read_only: bool,
    /// `ISOLATION LEVEL SERIALIZABLE` was given: a hot standby refuses it.
    pub serializable: bool,
}

impl TransactionControl {
    pub(crate) fn new(op: TransactionOp) -> Self {
        Self {
            op,
            read_only: false,
            serializable: false,
        }
    }

    /// A read-only, non-serializable `BEGIN`/`SET TRANSACTION`: what a standby accepts and
    /// the only transaction control that is replica safe by itself.
    pub fn starts_read_only(&self) -> bool {
        matches!(self.op, TransactionOp::Begin | TransactionOp::SetTransaction) && self.read_only && !self.serializable
    }
}

/// The classification of one SQL text: class, routing hint, unknown functions.
///
/// Cheap to clone (one `Arc`). Build it with [`classify`](super::classify) or
/// [`Classifier::classify`](super::Classifier::classify).
#[derive(Clone, PartialEq, Eq)]
pub struct QueryKind(Arc<Inner>);

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Inner {
    pub(crate) class: QueryClass,
    pub(crate) reason: Cow<'static, str>,
    pub(crate) hint: Option<Hint>,
    pub(crate) transaction: Option<TransactionControl>,
    /// Every transaction-control statement in the text starts a read-only transaction.
    pub(crate) transaction_replica_safe: bool,
    pub(crate) unknown_functions: Vec<String>,
    pub(crate) relations: Vec<String>,
    pub(crate) statements: usize,
    pub(crate) parsed: bool,
    pub(crate) procedure: bool,
    pub(crate) changes_catalog: bool,
}

impl QueryKind {
    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The kind of one statement whose class is known without parsing it (the ORM builds
    /// plain reads and writes of table columns only).
    pub(crate) fn known(class: QueryClass, reason: &'static str) -> Self {
        Self::from_inner(Inner {
            class,
            reason: reason.into(),
            hint: None,
            transaction: None,
            transaction_replica_safe: false,
            unknown_functions: Vec::new(),
            relations: Vec::new(),
            statements: 1,
            parsed: true,
            procedure: false,
            changes_catalog: false,
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The class: read, write, transaction control, session state or unknown.
    pub fn class(&self) -> QueryClass {
        self.0.class
    }

    /// Why the class was chosen, for logs: e.g. `"INSERT"`, `"calls nextval()"`.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// The `/* covet:... */` hint, if the text starts with one.
    pub fn hint(&self) -> Option<Hint> {
        self.0.hint
    }

    /// Details of the (first) transaction-control statement, e.g. to tell `BEGIN READ ONLY`
    /// from `BEGIN`.
    pub fn transaction(&self) -> Option<TransactionControl> {
        self.0.transaction
    }

    /// Functions the classifier does not know, as written with unquoted parts lowercased
    /// (`public.create_order`, `create_order`), in order of first use. The router can look
    /// their volatility up in `pg_proc` and call [`is_replica_safe_given`](Self::is_replica_safe_given).
    pub fn unknown_functions(&self) -> &[String] {
        &self.0.unknown_functions
    }

    /// Relations the text reads, as written (unquoted parts lowercased), system catalogs left
    /// out. Any of them may be a view whose definition writes (`pg_current_xact_id()`, a
    /// volatile function): the text cannot tell, so the router looks views up in the catalog
    /// and classifies their definitions. Empty for writes (they go to the primary anyway).
    pub fn relations(&self) -> &[String] {
        &self.0.relations
    }

    /// How many statements the text holds (0 when it could not be parsed).
    pub fn statement_count(&self) -> usize {
        self.0.statements
    }

    /// Whether the SQL parser understood the text. When it did not, the class comes from
    /// the leading keyword and token scan and is never [`QueryClass::Read`].
    /// Whether the text holds DDL (`CREATE`, `ALTER`, `DROP`, `COMMENT`, ...), after which what
    /// was learned from the catalog (functions' volatility, views' definitions) may be stale.
    pub fn changes_catalog(&self) -> bool {
        self.0.changes_catalog
    }

    /// Whether the text runs as one implicit transaction: parsed, with no transaction control
    /// and no procedure (which may commit inside). A server that refuses it (`25006`) ran none
    /// of it, so it may be sent again elsewhere.
    pub fn is_atomic(&self) -> bool {
        self.0.parsed && self.0.transaction.is_none() && !self.0.procedure
    }

    pub fn is_parsed(&self) -> bool {
        self.0.parsed
    }

    /// Whether the text may run on a hot standby, with what the classifier knows.
    ///
    /// True for parsed reads that call only known functions, for a read-only `BEGIN`/`SET
    /// TRANSACTION`, and for reads or unparseable text marked `/* covet:replica */`.
    /// Never true for writes or session state, nor with `/* covet:primary */`.
    pub fn is_replica_safe(&self) -> bool {
        self.is_replica_safe_given(|_| None)
    }

    /// Like [`is_replica_safe`](Self::is_replica_safe), but asks `lookup` about each of
    /// the [`unknown_functions`](Self::unknown_functions): the text is replica safe only if
    /// every one of them is [`FunctionSafety::ReplicaSafe`] (`None` counts as unsafe).
    pub fn is_replica_safe_given<F>(&self, mut lookup: F) -> bool
    where
        F: FnMut(&str) -> Option<FunctionSafety>,
    {
        let inner = &*self.0;
        let mut functions_safe = || {
            inner
                .unknown_functions
                .iter()
                .all(|f| lookup(f) == Some(FunctionSafety::ReplicaSafe))
        };
        match (inner.hint, inner.class) {
            (Some(Hint::Primary), _) => false,
            (_, QueryClass::Write | QueryClass::SessionState) => false,
            // The caller vouches for what the classifier could not see.
            (Some(Hint::Replica), QueryClass::Read | QueryClass::Unknown) => true,
            (_, QueryClass::Unknown) => false,
            // Text the parser could not read goes to the primary, whatever its tokens suggest.
            (_, QueryClass::Read) if !inner.parsed => false,
            (_, QueryClass::Read) => functions_safe(),
            (_, QueryClass::TransactionControl) => inner.transaction_replica_safe && functions_safe(),
        }
    }
}

impl fmt::Debug for QueryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.0;
        let mut d = f.debug_struct("QueryKind");
        d.field("class", &inner.class).field("reason", &inner.reason);
        if let Some(hint) = inner.hint {
            d.field("hint", &hint);
        }
        if let Some(txn) = inner.transaction {
            d.field("transaction", &txn);
        }
        if !inner.unknown_functions.is_empty() {
            d.field("unknown_functions", &inner.unknown_functions);
        }
        if !inner.relations.is_empty() {
            d.field("relations", &inner.relations);
        }
        d.field("statements", &inner.statements)
            .field("parsed", &inner.parsed)
            .finish()
    }
}
