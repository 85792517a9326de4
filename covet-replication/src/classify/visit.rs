//! Classification of parsed statements: a `match` on the statement kind, and a sqlparser
//! [`Visitor`] over queries for row locks, `SELECT INTO`, data-modifying CTEs and
//! function calls.

use std::borrow::Cow;
use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select, Set, Statement,
    TableFactor, TransactionAccessMode, TransactionIsolationLevel, TransactionMode, UtilityOption, Value, Visit,
    Visitor,
};

use super::functions::{FunctionName, Resolution, Resolve};
use super::kind::{QueryClass, TransactionControl, TransactionOp};

/// How deep SQL text passed to functions such as `query_to_xml('...')` is followed.
const MAX_NESTED_SQL_DEPTH: u8 = 3;

/// The verdict on one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) class: QueryClass,
    pub(crate) reason: Cow<'static, str>,
    pub(crate) transaction: Option<TransactionControl>,
}

impl Verdict {
    pub(crate) fn new(class: QueryClass, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            class,
            reason: reason.into(),
            transaction: None,
        }
    }

    fn read(reason: &'static str) -> Self {
        Self::new(QueryClass::Read, reason)
    }

    fn write(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(QueryClass::Write, reason)
    }

    fn session(reason: &'static str) -> Self {
        Self::new(QueryClass::SessionState, reason)
    }

    pub(crate) fn transaction(txn: TransactionControl, reason: &'static str) -> Self {
        Self {
            class: QueryClass::TransactionControl,
            reason: Cow::Borrowed(reason),
            transaction: Some(txn),
        }
    }
}

/// The combined verdict on all statements of one text.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub(crate) verdict: Option<Verdict>,
    pub(crate) first_transaction: Option<TransactionControl>,
    /// Every transaction-control statement seen starts a read-only transaction.
    pub(crate) transaction_replica_safe: bool,
    pub(crate) unknown_functions: Vec<String>,
    /// Relations read (not system catalogs): any may be a view whose definition writes.
    pub(crate) relations: Vec<String>,
    pub(crate) statements: usize,
    /// The SQL parser understood the whole text.
    pub(crate) parsed: bool,
    /// A `CALL`: a procedure may commit inside, so a part of it may have committed when it fails.
    pub(crate) procedure: bool,
    /// DDL (`CREATE`, `ALTER`, `DROP`, `COMMENT`, ...): what was learned from the catalog may
    /// no longer hold.
    pub(crate) changes_catalog: bool,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            verdict: None,
            first_transaction: None,
            transaction_replica_safe: true,
            unknown_functions: Vec::new(),
            relations: Vec::new(),
            statements: 0,
            parsed: true,
            procedure: false,
            changes_catalog: false,
        }
    }
}

impl Analysis {
    /// Adds one statement's verdict; the class that needs the primary most wins.
    pub(crate) fn add(&mut self, verdict: Verdict) {
        self.statements += 1;
        if let Some(txn) = verdict.transaction {
            self.first_transaction.get_or_insert(txn);
            self.transaction_replica_safe &= txn.starts_read_only();
        }
        let wins = self
            .verdict
            .as_ref()
            .is_none_or(|current| verdict.class.precedence() > current.class.precedence());
        if wins {
            self.verdict = Some(verdict);
        }
    }

    pub(crate) fn class(&self) -> QueryClass {
        self.verdict.as_ref().map_or(QueryClass::Unknown, |v| v.class)
    }

    pub(crate) fn add_unknown_function(&mut self, name: FunctionName) {
        if !self.unknown_functions.iter().any(|f| f == name.full()) {
            self.unknown_functions.push(name.into_string());
        }
    }

    /// Adds unknown functions found elsewhere (nested SQL, other parts), keeping order.
    pub(crate) fn add_unknown_functions(&mut self, names: Vec<String>) {
        for name in names {
            if !self.unknown_functions.contains(&name) {
                self.unknown_functions.push(name);
            }
        }
    }

    /// Records a relation read, unless it is a system catalog or view (those never write).
    fn add_relation(&mut self, name: FunctionName) {
        let system = match name.schema() {
            Some(schema) => matches!(schema, "pg_catalog" | "information_schema"),
            None => name.name().starts_with("pg_"),
        };
        if !system && !self.relations.iter().any(|r| r == name.full()) {
            self.relations.push(name.into_string());
        }
    }

    /// Adds relations found elsewhere (nested SQL, other parts), keeping order.
    pub(crate) fn add_relations(&mut self, names: Vec<String>) {
        for name in names {
            if !self.relations.contains(&name) {
                self.relations.push(name);
            }
        }
    }
}

/// Classifies parsed statements. `depth` counts nested SQL texts (see [`MAX_NESTED_SQL_DEPTH`]).
pub(crate) fn analyze_statements<R: Resolve>(statements: &[Statement], resolver: &R, depth: u8) -> Analysis {
    let mut analysis = Analysis::default();
    for statement in statements {
        let verdict = classify_statement(statement, resolver, depth, &mut analysis);
        analysis.add(verdict);
    }
    analysis
}

fn classify_statement<R: Resolve>(statement: &Statement, resolver: &R, depth: u8, analysis: &mut Analysis) -> Verdict {
    use Statement as S;
    match statement {
        S::Query(query) => walk(query.as_ref(), resolver, depth, analysis, "query"),
        S::Insert(_) => Verdict::write("INSERT"),
        S::Update(_) => Verdict::write("UPDATE"),
        S::Delete(_) => Verdict::write("DELETE"),
        S::Merge(_) => Verdict::write("MERGE"),
        S::Explain {
            analyze,
            statement,
            options,
            ..
        } => {
            if *analyze || options.as_deref().is_some_and(explain_options_analyze) {
                // EXPLAIN ANALYZE executes the statement.
                classify_statement(statement, resolver, depth, analysis)
            } else if matches!(**statement, S::Execute { .. }) {
                Verdict::session("EXPLAIN EXECUTE uses a prepared statement of the session")
            } else {
                // Plain EXPLAIN only plans; a standby plans writes too.
                Verdict::read("EXPLAIN without ANALYZE")
            }
        }
        S::ExplainTable { .. } | S::ShowVariable { .. } | S::ShowVariables { .. } => Verdict::read("SHOW"),
        S::Copy { source, to: true, .. } => match source {
            CopySource::Query(query) => walk(query, resolver, depth, analysis, "COPY (query) TO"),
            CopySource::Table { .. } => Verdict::read("COPY TO"),
        },
        S::Copy { .. } => Verdict::write("COPY FROM"),
        S::StartTransaction { modes, .. } => Verdict::transaction(transaction(TransactionOp::Begin, modes), "BEGIN"),
        S::Commit { .. } => Verdict::transaction(TransactionControl::new(TransactionOp::Commit), "COMMIT"),
        S::Rollback { savepoint: None, .. } => {
            Verdict::transaction(TransactionControl::new(TransactionOp::Rollback), "ROLLBACK")
        }
        S::Rollback { .. } => Verdict::transaction(
            TransactionControl::new(TransactionOp::RollbackToSavepoint),
            "ROLLBACK TO SAVEPOINT",
        ),
        S::Savepoint { .. } => Verdict::transaction(TransactionControl::new(TransactionOp::Savepoint), "SAVEPOINT"),
        S::ReleaseSavepoint { .. } => Verdict::transaction(
            TransactionControl::new(TransactionOp::ReleaseSavepoint),
            "RELEASE SAVEPOINT",
        ),
        S::Set(Set::SetTransaction {
            modes, session: false, ..
        }) => Verdict::transaction(transaction(TransactionOp::SetTransaction, modes), "SET TRANSACTION"),
        S::Set(_) => Verdict::session("SET"),
        S::Reset(_) => Verdict::session("RESET"),
        S::LISTEN { .. } => Verdict::session("LISTEN"),
        S::UNLISTEN { .. } => Verdict::session("UNLISTEN"),
        S::Prepare { .. } => Verdict::session("PREPARE"),
        S::Execute { .. } => Verdict::session("EXECUTE runs a prepared statement of the session"),
        S::Deallocate { .. } => Verdict::session("DEALLOCATE"),
        S::Discard { .. } => Verdict::session("DISCARD"),
        S::Load { .. } => Verdict::session("LOAD"),
        S::Fetch { .. } => Verdict::session("FETCH reads a cursor of the session"),
        S::Close { .. } => Verdict::session("CLOSE"),
        S::Declare { stmts, .. } => {
            for declare in stmts {
                if let Some(query) = &declare.for_query {
                    let verdict = walk(query.as_ref(), resolver, depth, analysis, "DECLARE");
                    if verdict.class == QueryClass::Write {
                        return verdict;
                    }
                }
            }
            Verdict::session("DECLARE keeps a cursor in the session")
        }
        // Temporary objects live in the session; a standby refuses to create them anyway.
        S::CreateTable(table) if table.temporary => Verdict::session("CREATE TEMP TABLE"),
        S::CreateView(view) if view.temporary => Verdict::session("CREATE TEMP VIEW"),
        S::CreateSequence { temporary: true, .. } => Verdict::session("CREATE TEMP SEQUENCE"),
        S::NOTIFY { .. } => Verdict::write("NOTIFY"),
        // A standby grants the weak modes, but such locks exclude nothing on the primary.
        S::Lock(_) | S::LockTables { .. } => Verdict::write("LOCK"),
        S::Call(_) => {
            analysis.procedure = true;
            Verdict::write("CALL runs a procedure")
        }
        S::Truncate(_) => Verdict::write("TRUNCATE"),
        S::Vacuum(_) => Verdict::write("VACUUM"),
        S::Analyze(_) => Verdict::write("ANALYZE"),
        S::RefreshMaterializedView(_) => Verdict::write("REFRESH MATERIALIZED VIEW"),
        S::Comment { .. } => Verdict::write("COMMENT"),
        S::Grant(_) | S::GrantRole(_) => Verdict::write("GRANT"),
        S::Revoke(_) | S::RevokeRole(_) => Verdict::write("REVOKE"),
        // Everything else sqlparser knows is DDL or maintenance: it changes the database.
        _ => {
            analysis.changes_catalog = true;
            Verdict::write("DDL or maintenance statement")
        }
    }
}

/// `EXPLAIN (ANALYZE [true|on|1], ...)`: whether the options ask for execution.
fn explain_options_analyze(options: &[UtilityOption]) -> bool {
    options.iter().any(|option| {
        let name = &option.name.value;
        (name.eq_ignore_ascii_case("analyze") || name.eq_ignore_ascii_case("analyse"))
            && !option.arg.as_ref().is_some_and(is_false_option)
    })
}

/// `false`, `off`, `0`, `no` as written in an EXPLAIN option; anything else counts as true.
fn is_false_option(arg: &Expr) -> bool {
    let text = match arg {
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => return !b,
            Value::Number(n, _) => n.as_str(),
            Value::SingleQuotedString(s) => s.as_str(),
            _ => return false,
        },
        Expr::Identifier(ident) => ident.value.as_str(),
        _ => return false,
    };
    ["false", "off", "0", "no"].iter().any(|f| text.eq_ignore_ascii_case(f))
}

fn transaction(op: TransactionOp, modes: &[TransactionMode]) -> TransactionControl {
    let mut txn = TransactionControl::new(op);
    for mode in modes {
        match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => txn.read_only = true,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => txn.read_only = false,
            TransactionMode::IsolationLevel(TransactionIsolationLevel::Serializable) => {
                txn.serializable = true;
            }
            TransactionMode::IsolationLevel(_) => txn.serializable = false,
        }
    }
    txn
}

/// Walks a query (or anything else visitable): a read unless the walker finds a write.
fn walk<N: Visit, R: Resolve>(
    node: &N,
    resolver: &R,
    depth: u8,
    analysis: &mut Analysis,
    what: &'static str,
) -> Verdict {
    let mut walker = QueryWalker {
        resolver,
        depth,
        analysis,
    };
    match node.visit(&mut walker) {
        ControlFlow::Continue(()) => Verdict::read(what),
        ControlFlow::Break(reason) => Verdict::write(reason),
    }
}

/// Stops at the first thing that needs the primary, with the reason; collects unknown
/// functions along the way.
struct QueryWalker<'a, R> {
    resolver: &'a R,
    depth: u8,
    analysis: &'a mut Analysis,
}

type Found = Cow<'static, str>;

impl<R: Resolve> QueryWalker<'_, R> {
    fn function(&mut self, name: &ObjectName, args: &[FunctionArg]) -> ControlFlow<Found> {
        let Some(name) = FunctionName::from_object_name(name) else {
            return ControlFlow::Break(Cow::Borrowed("calls a function with an odd name"));
        };
        match self.resolver.resolve(&name) {
            Resolution::ReplicaSafe => ControlFlow::Continue(()),
            Resolution::PrimaryOnly(why) => ControlFlow::Break(why),
            Resolution::Unknown => {
                self.analysis.add_unknown_function(name);
                ControlFlow::Continue(())
            }
            Resolution::RunsSql { arg, arity } if arity.is_none_or(|n| n == args.len()) => {
                self.nested_sql(&name, args.get(arg))
            }
            // Another overload of the function, one that runs no SQL.
            Resolution::RunsSql { .. } => ControlFlow::Continue(()),
        }
    }

    /// A function that runs SQL text: classify the text if it is a literal.
    fn nested_sql(&mut self, name: &FunctionName, arg: Option<&FunctionArg>) -> ControlFlow<Found> {
        let text = arg.and_then(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))
            | FunctionArg::Named {
                arg: FunctionArgExpr::Expr(expr),
                ..
            } => string_literal(expr),
            _ => None,
        });
        let cannot_check = || {
            ControlFlow::Break(Cow::Owned(format!(
                "calls {name}() with SQL text that cannot be checked"
            )))
        };
        let Some(text) = text else {
            return cannot_check();
        };
        if self.depth >= MAX_NESTED_SQL_DEPTH {
            return cannot_check();
        }
        let nested = super::analyze_sql(text, self.resolver, self.depth + 1);
        match nested.class() {
            QueryClass::Read => {
                self.analysis.add_unknown_functions(nested.unknown_functions);
                self.analysis.add_relations(nested.relations);
                ControlFlow::Continue(())
            }
            QueryClass::Write => {
                let why = nested.verdict.map_or(Cow::Borrowed("write"), |v| v.reason);
                ControlFlow::Break(Cow::Owned(format!("calls {name}() with SQL that writes: {why}")))
            }
            _ => cannot_check(),
        }
    }
}

/// The text of a string literal, also under casts and parentheses (`'SELECT 1'::text`).
fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            Value::DollarQuotedString(s) => Some(&s.value),
            _ => None,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => string_literal(expr),
        _ => None,
    }
}

impl<R: Resolve> Visitor for QueryWalker<'_, R> {
    type Break = Found;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Found> {
        if query.locks.is_empty() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(Cow::Borrowed("SELECT ... FOR UPDATE/SHARE locks rows"))
        }
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Found> {
        if select.into.is_some() {
            ControlFlow::Break(Cow::Borrowed("SELECT INTO creates a table"))
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Found> {
        // Statements inside a query are data-modifying CTEs (`WITH x AS (UPDATE ...)`).
        let what = match statement {
            Statement::Insert(_) => "INSERT",
            Statement::Update(_) => "UPDATE",
            Statement::Delete(_) => "DELETE",
            Statement::Merge(_) => "MERGE",
            _ => "a statement",
        };
        ControlFlow::Break(Cow::Owned(format!("data-modifying WITH: {what}")))
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Found> {
        match expr {
            Expr::Function(f) => {
                let args = match &f.args {
                    FunctionArguments::List(list) => list.args.as_slice(),
                    FunctionArguments::None | FunctionArguments::Subquery(_) => &[],
                };
                self.function(&f.name, args)
            }
            // Bare `CURRENT_SCHEMA` is the function in PostgreSQL; sqlparser sees a column.
            Expr::Identifier(ident)
                if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("current_schema") =>
            {
                self.function(&ObjectName::from(vec![ident.clone()]), &[])
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Found> {
        match factor {
            // `FROM generate_series(1, 10)`.
            TableFactor::Table {
                name, args: Some(args), ..
            } => self.function(name, &args.args),
            TableFactor::Function { name, args, .. } => self.function(name, args),
            TableFactor::Table { name, args: None, .. } => {
                if let Some(name) = FunctionName::from_object_name(name) {
                    self.analysis.add_relation(name);
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}
