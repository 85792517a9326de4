//! Hostile text: the classifier must answer, in bounded stack, for anything. Each check runs on
//! a thread with a 2 MiB stack (a Tokio worker's), where the shapes below at 100,000 terms
//! overflowed before the guard (`guard.rs`) existed: a process abort, not a test failure.

use proptest::prelude::*;

use super::guard::{MAX_BYTES, MAX_OPERATORS};
use super::{QueryClass, QueryKind, classify};

const STACK: usize = 2 << 20;

fn on_small_stack(sql: String) -> QueryKind {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || classify(&sql))
        .expect("spawn")
        .join()
        .expect("classify returned")
}

fn chain(n: usize, term: &str, op: &str) -> String {
    vec![term; n].join(op)
}

/// The shapes that reported crashes and their relatives, at `n` terms or levels.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("or", format!("SELECT 1 FROM t WHERE {}", chain(n, "a = 1", " OR "))),
        ("and", format!("SELECT 1 FROM t WHERE {}", chain(n, "a = 1", " AND "))),
        ("plus", format!("SELECT {}", chain(n, "1", "+"))),
        ("concat", format!("SELECT {}", chain(n, "'a'", "||"))),
        ("cast", format!("SELECT 1{}", "::int".repeat(n))),
        ("subscript", format!("SELECT a{} FROM t", "[1]".repeat(n))),
        ("json", format!("SELECT d{} FROM t", "->'k'".repeat(n))),
        ("parens", format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n))),
        (
            "subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
        ("not", format!("SELECT 1 WHERE {}true", "NOT ".repeat(n))),
        ("minus", format!("SELECT {}1", "- ".repeat(n))),
        (
            "in subqueries",
            format!(
                "SELECT 1 WHERE a IN {}1{}",
                "(SELECT a FROM t WHERE a IN (".repeat(n / 10),
                "))".repeat(n / 10)
            ),
        ),
    ]
}

#[test]
fn deep_and_long_text_is_unknown_not_a_crash() {
    for (name, sql) in shapes(100_000) {
        let kind = on_small_stack(sql);
        // sqlparser recurses on parentheses and stops at its recursion limit: such a text is
        // judged from its tokens, a plain read here. Every other shape is over the guard's limit.
        if matches!(name, "parens" | "subqueries") {
            assert!(!kind.is_parsed(), "{name}: {kind:?}");
            assert_eq!(kind.class(), QueryClass::Read, "{name}: {kind:?}");
        } else {
            assert_eq!(kind.class(), QueryClass::Unknown, "{name}: {kind:?}");
            assert!(!kind.is_replica_safe(), "{name}");
        }
    }
    let huge = format!("SELECT 1 WHERE a IN ({})", chain(MAX_BYTES / 2, "1", ","));
    let kind = on_small_stack(huge);
    assert_eq!(kind.class(), QueryClass::Unknown);
}

/// The guard must not cost ordinary reads their replica: long texts with few operators, and
/// chains just under the limit, are still parsed and judged.
#[test]
fn long_but_shallow_reads_still_go_to_replicas() {
    let in_list = format!("SELECT * FROM t WHERE id IN ({})", chain(20_000, "12345", ", "));
    let strings = format!("SELECT * FROM t WHERE name IN ({})", chain(5_000, "'some name'", ", "));
    let params = format!(
        "SELECT * FROM t WHERE id = ANY(ARRAY[{}])",
        (1..3_000).map(|i| format!("${i}")).collect::<Vec<_>>().join(",")
    );
    let under = format!("SELECT 1 FROM t WHERE {}", chain(MAX_OPERATORS / 2, "a = 1", " OR "));
    for sql in [in_list, strings, params, under] {
        assert!(
            sql.len() > 2 * MAX_OPERATORS,
            "a test of the long path: {} bytes",
            sql.len()
        );
        let kind = on_small_stack(sql.clone());
        assert_eq!(kind.class(), QueryClass::Read, "{}: {kind:?}", &sql[..60]);
        assert!(kind.is_replica_safe());
    }
    // One operator over the limit: the count is what decides.
    let over = format!(
        "SELECT 1 FROM t WHERE {} OR a = 1",
        chain(MAX_OPERATORS / 2, "a = 1", " OR ")
    );
    assert_eq!(on_small_stack(over).class(), QueryClass::Unknown);
}

/// A nested, random mix of every construct above, up to far past the limits.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("a".to_owned()),
        Just("1".to_owned()),
        Just("'x'".to_owned()),
        Just("$1".to_owned())
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            (
                inner.clone(),
                1..30_000usize,
                prop::sample::select(vec![" OR ", " AND ", "+", "||", " = ", "->"])
            )
                .prop_map(|(e, n, op)| vec![e; n].join(op)),
            (inner.clone(), 1..5_000usize).prop_map(|(e, n)| format!("{e}{}", "::int".repeat(n))),
            (inner.clone(), 1..200usize).prop_map(|(e, n)| format!("{}{e}{}", "(".repeat(n), ")".repeat(n))),
            (inner.clone(), 1..100usize).prop_map(|(e, n)| format!("{}{e}{}", "(SELECT ".repeat(n), ")".repeat(n))),
            (inner.clone(), 1..500usize).prop_map(|(e, n)| format!("{}{e}", "NOT ".repeat(n))),
            inner.prop_map(|e| format!("CASE WHEN {e} THEN {e} END")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("COVET_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_generated_text_gets_an_answer(e in expr(), write in any::<bool>()) {
        let sql = if write { format!("UPDATE t SET a = {e}") } else { format!("SELECT {e} FROM t") };
        let kind = on_small_stack(sql);
        // A write is never replica safe, whatever its size.
        prop_assert!(!(write && kind.is_replica_safe()), "{kind:?}");
    }
}
