//! Compile-fail tests: misuse of `#[derive(Model)]` and of the QuerySet types is a compile error
//! pointing at the offending item. Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p covet-tests --test ui`, then read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
