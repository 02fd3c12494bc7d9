//! The layout is the architecture, so it is checked like behaviour: modules of `src/`
//! depend on each other in one direction only (no cycle between top-level modules),
//! no command imports another, and telemetry never reaches into the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<module>` references of every top-level module, from code (comments and doc
/// comments are not dependencies).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let entry = deps.entry(top.clone()).or_default();
            for line in text.lines().map(str::trim_start) {
                if line.starts_with("//") {
                    continue;
                }
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        entry.insert(name);
                    }
                }
            }
        }
    }
    deps
}

#[test]
fn top_level_modules_form_no_cycle() {
    let deps = dependencies();
    assert!(
        deps.contains_key("commands") && deps.contains_key("store"),
        "{deps:?}"
    );
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for next in deps.get(m).into_iter().flatten() {
            visit(next, deps, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in deps.keys() {
        visit(m, &deps, &mut Vec::new(), &mut done);
    }
}

#[test]
fn only_main_dispatches_to_commands_and_telemetry_does_not_import_cli() {
    let deps = dependencies();
    for (module, uses) in &deps {
        assert!(
            !uses.contains("commands"),
            "{module} imports commands: only main.rs dispatches to them"
        );
    }
    assert!(
        !deps["telemetry"].contains("cli"),
        "{:?}",
        deps["telemetry"]
    );
}

#[test]
fn no_command_imports_another() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands");
    let commands: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().is_some_and(|s| s != "mod"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    for file in &commands {
        let text = std::fs::read_to_string(dir.join(format!("{file}.rs"))).unwrap();
        for other in commands.iter().filter(|c| *c != file) {
            for pattern in [format!("commands::{other}"), format!("super::{other}")] {
                assert!(
                    !text.contains(&pattern),
                    "commands/{file}.rs uses {pattern}: commands share library modules, not each other"
                );
            }
        }
    }
}
