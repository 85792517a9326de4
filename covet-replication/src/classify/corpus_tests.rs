//! The classifier against `tests/data/statements.tsv`: 3,467 statements labelled by a
//! real PostgreSQL 15 hot standby (see that folder's README.md). With `CORPUS_DUMP=1` the
//! test also prints every plain read sent to the primary and every statement sqlparser
//! could not parse.

use std::collections::BTreeMap;

use super::{Classifier, QueryClass, classify};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/statements.tsv");

/// Upper bound for plain reads sent to the primary, in percent (9.9% when written). They
/// are mostly calls of functions the regression scripts define (103: unknown until the router
/// looks them up in `pg_proc`), then reads sqlparser cannot parse (37: unparseable text always
/// goes to the primary), advisory locks and weak `LOCK`s that a standby accepts but that must
/// take effect on the primary.
const MAX_PLAIN_READS_TO_PRIMARY_PERCENT: f64 = 10.0;

/// Writes that no classifier can see in the text: `(id, sql, why)`. The router keeps them off
/// the standbys: it looks up the relations a read names ([`QueryKind::relations`]) in
/// `pg_class` and classifies view definitions (tests/routing.rs,
/// `reads_of_views_that_write_run_on_the_primary_without_a_refusal`, runs this very shape);
/// and should anything slip through, the standby refuses it with SQLSTATE 25006 and
/// [`Classifier::remember_write`] sends it to the primary from then on. Each entry is
/// checked, so the list cannot grow stale or hide a new miss.
///
/// [`QueryKind::relations`]: super::QueryKind::relations
const WRITES_INVISIBLE_IN_TEXT: &[(&str, &str, &str)] = &[(
    "110",
    "select * from my_locks order by 1",
    "my_locks is a view (alter_table.sql) whose WHERE clause assigns a transaction id",
)];

struct Entry {
    id: String,
    label: String,
    kind: String,
    sql: String,
}

/// Undoes the README's escaping: `\\`, `\t`, `\n`, `\r`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn load() -> Vec<Entry> {
    let text = std::fs::read_to_string(CORPUS).unwrap_or_else(|e| {
        panic!("cannot read the labelled corpus {CORPUS}: {e} (it lives in covet-replication/tests/data/)")
    });
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id\tsource\tlabel\tkind\tsql"),
        "unexpected header in {CORPUS}"
    );
    lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.splitn(5, '\t').collect();
            assert_eq!(cols.len(), 5, "malformed corpus line: {line}");
            Entry {
                id: cols[0].to_owned(),
                label: cols[2].to_owned(),
                kind: cols[3].to_owned(),
                sql: unescape(cols[4]),
            }
        })
        .collect()
}

#[test]
fn corpus_writes_are_never_replica_safe_and_few_reads_go_to_the_primary() {
    let entries = load();
    assert!(
        entries.len() > 3000,
        "corpus looks truncated: {} entries",
        entries.len()
    );

    let mut unsafe_writes = Vec::new();
    let mut unsafe_session = Vec::new();
    let mut plain_reads = 0usize;
    let mut plain_reads_to_primary = 0usize;
    let mut why_primary: BTreeMap<String, usize> = BTreeMap::new();
    let mut unparsed = 0usize;
    for entry in &entries {
        let kind = classify(&entry.sql);
        if !kind.is_parsed() {
            unparsed += 1;
            if std::env::var_os("CORPUS_DUMP").is_some() {
                eprintln!(
                    "UNPARSED\t{}\t{}\t{:?}\t{}",
                    entry.id,
                    entry.label,
                    kind,
                    entry.sql.replace('\n', " ")
                );
            }
        }
        let safe = kind.is_replica_safe();
        if entry.label == "write" && safe {
            let line = format!("{}\t{:?}\t{}", entry.id, kind, entry.sql);
            unsafe_writes.push((entry.id.clone(), line));
        }
        if matches!(entry.kind.as_str(), "session" | "cursor") && safe {
            unsafe_session.push(format!("{}\t{:?}\t{}", entry.id, kind, entry.sql));
        }
        if entry.label == "read" && entry.kind == "plain" {
            plain_reads += 1;
            if !safe {
                plain_reads_to_primary += 1;
                let why = match kind.class() {
                    QueryClass::Read => "unknown function".to_owned(),
                    _ => kind.reason().to_owned(),
                };
                *why_primary.entry(why).or_default() += 1;
                if std::env::var_os("CORPUS_DUMP").is_some() {
                    eprintln!("PRIMARY\t{}\t{:?}\t{}", entry.id, kind, entry.sql.replace('\n', " "));
                }
            }
        }
    }

    let percent = 100.0 * plain_reads_to_primary as f64 / plain_reads as f64;
    eprintln!(
        "corpus: {} statements, {unparsed} not parsed; writes classified replica safe: {} \
         ({} of them invisible in the text); plain reads sent to the primary: \
         {plain_reads_to_primary} of {plain_reads} ({percent:.1}%)",
        entries.len(),
        unsafe_writes.len(),
        WRITES_INVISIBLE_IN_TEXT.len(),
    );
    for (why, count) in &why_primary {
        eprintln!("  {count:5}  {why}");
    }
    for (id, sql, why) in WRITES_INVISIBLE_IN_TEXT {
        let entry = entries.iter().find(|e| e.id == *id);
        assert!(
            entry.is_some_and(|e| e.label == "write" && e.sql == *sql),
            "WRITES_INVISIBLE_IN_TEXT entry {id} no longer matches the corpus"
        );
        let position = unsafe_writes.iter().position(|(offender, _)| offender == id);
        assert!(
            position.is_some(),
            "{id} ({why}) is now caught by the classifier: remove it from WRITES_INVISIBLE_IN_TEXT"
        );
        if let Some(position) = position {
            unsafe_writes.remove(position);
        }
        // The router's view lookup needs the relation's name.
        assert_eq!(classify(sql).relations(), ["my_locks"]);
        // What the router does after a standby refused it.
        let classifier = Classifier::new(16);
        classifier.remember_write(sql);
        assert!(!classifier.classify(sql).is_replica_safe());
    }
    let offenders: Vec<String> = unsafe_writes.into_iter().map(|(_, line)| line).collect();
    assert!(
        offenders.is_empty(),
        "{} statements labelled `write` were classified replica safe:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
    assert!(
        unsafe_session.is_empty(),
        "session/cursor statements classified replica safe:\n{}",
        unsafe_session.join("\n")
    );
    assert!(
        percent < MAX_PLAIN_READS_TO_PRIMARY_PERCENT,
        "{plain_reads_to_primary} of {plain_reads} plain reads ({percent:.1}%) go to the primary"
    );
}
