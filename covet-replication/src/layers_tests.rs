//! The one import rule (docs/ARCHITECTURE.md), checked on the source: each layer imports only
//! the layers below it; the data plane and the control plane never import each other.

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer and what it may import besides itself.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("config", &["core"]),
    ("classify", &["core", "config"]),
    ("error", &["core", "config"]),
    ("pg", &["core", "config", "error"]),
    ("ha", &["core", "config", "error"]),
    ("cluster", &["core", "config", "error", "pg"]),
    ("data", &["core", "config", "classify", "error", "pg", "cluster"]),
    ("control", &["core", "config", "error", "pg", "ha", "cluster"]),
    // The handle, over both planes: manager < pool < status, global < orm.
    ("manager", &["core", "config", "error", "cluster", "control"]),
    (
        "pool",
        &["core", "config", "error", "pg", "cluster", "data", "control", "manager"],
    ),
    (
        "status",
        &["core", "config", "cluster", "data", "control", "manager", "pool"],
    ),
    ("global", &["config", "error", "pool"]),
    (
        "orm",
        &["core", "config", "classify", "error", "data", "pool", "global"],
    ),
];

/// The `crate::x` (and `$crate::x`) modules named in the code of `dir`, comments left out.
fn imports(dir: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
            let code = line.split(" //").next().unwrap_or(line);
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.insert((name, path.display().to_string()));
            }
        }
    }
    found
}

#[test]
fn layers_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (layer, allowed) in LAYERS {
        let dir = src.join(layer);
        let dir = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{layer}.rs"))
        };
        assert!(dir.exists(), "no layer {layer}");
        for (name, file) in imports(&dir) {
            // A crate-root re-export (`crate::ReplicatedPool`) would hide which layer it is from.
            if name != *layer && !allowed.contains(&name.as_str()) {
                wrong.push(format!("{file}: {layer} imports crate::{name}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The check can fail: a file of the data plane naming the control plane is caught.
#[test]
fn the_import_check_sees_a_forbidden_import() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.rs"),
        "// crate::control in a comment is fine\nuse crate::control::Control;\n",
    )
    .unwrap();
    let names: Vec<String> = imports(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["control"]);
}
