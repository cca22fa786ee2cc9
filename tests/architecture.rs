//! The shape of the house, checked: data flows one way between the top-level modules of every
//! crate (no import cycle through `crate::`/`super::` paths), no source file grows past 600
//! lines before its test module, and the add-on's manifest names neither the aggregation server
//! nor a PostgreSQL client.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
        {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere) and without
/// comments (a doc link is not a dependency).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") { "" } else { line }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`None` for the crate root and binaries), and how
/// deep it sits (1 = `src/x.rs` or `src/x/mod.rs`).
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => None,
        [first, ..] => Some((first.clone(), parts.len())),
        [] => None,
    }
}

/// Identifiers following `prefix` in `code` (`crate::store::x` → `store`).
fn idents_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    code.match_indices(prefix).filter_map(move |(i, _)| {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &code[i + prefix.len()..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        (!ident.is_empty()).then_some(ident)
    })
}

/// Module → modules it imports, for the crate whose sources are in `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(src, f).map(|(m, _)| m))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some((module, depth)) = module_of(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        let code = code(&text);
        let mut targets: Vec<String> = idents_after(&code, "crate::").collect();
        if depth == 1 {
            // In a top-level module, `super::` is the crate root.
            targets.extend(idents_after(&code, "super::"));
        }
        for target in targets {
            if target != module && modules.contains(&target) {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

const CRATES: &[&str] = &[
    "src",
    "crates/shared/src",
    "crates/aggregator/src",
    "crates/test-support/src",
];

#[test]
fn no_module_imports_its_importer() {
    for krate in CRATES {
        let graph = module_graph(&workspace().join(krate));
        assert!(
            !graph.is_empty() || *krate != "src",
            "{krate}: no modules found"
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &["a"][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a → b → c → a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let code = code("use crate::store::x;\n// crate::service\nfn f() { super::http::g() }");
    assert_eq!(
        idents_after(&code, "crate::").collect::<Vec<_>>(),
        ["store"]
    );
    assert_eq!(idents_after(&code, "super::").collect::<Vec<_>>(), ["http"]);
}

#[test]
fn no_source_file_is_a_god_file() {
    const MAX_LINES: usize = 600;
    let mut too_long = Vec::new();
    for krate in CRATES {
        for file in sources(&workspace().join(krate)) {
            let text = std::fs::read_to_string(&file).expect("read");
            let lines = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .count();
            if lines > MAX_LINES {
                too_long.push(format!("{} ({lines})", file.display()));
            }
        }
    }
    assert!(
        too_long.is_empty(),
        "over {MAX_LINES} lines before the tests: {too_long:?}"
    );
}

#[test]
fn the_add_on_does_not_depend_on_the_server() {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
    let deps = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("the add-on's [dependencies]");
    for forbidden in [
        "printernizer-stats-aggregator",
        "tokio-postgres",
        "deadpool",
        "tower-http",
    ] {
        assert!(
            !deps.contains(forbidden),
            "the add-on depends on {forbidden}"
        );
    }
}
