//! The layering rules of `shared/DESIGN.md` and `src/lib.rs`, read from the sources: which
//! top-level module names which (`crate::x` in `src/<module>.rs` and `src/<module>/**`), no
//! import cycle between top-level modules, and the edges the design forbids.
//!
//! The same check by hand: `grep -rhoE "crate::[a-z_]+" src/sync.rs src/sync | sort | uniq -c`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its files name.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        if matches!(name, "lib" | "main") {
            continue;
        }
        let mut files = vec![path.clone()];
        collect_rs(&src.join(name), &mut files);
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                uses.extend(named_modules(code));
            }
        }
        uses.remove(name);
        graph.insert(name.to_owned(), uses);
    }
    graph
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The `x` of every `crate::x` in a line of code.
fn named_modules(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `ghl_gateway::` in doc tests and `$crate::` in macros are not edges.
            !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// A cycle in the graph, as a path `a -> b -> ... -> a`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[
            ("cli", "app"),
            ("app", "config"),
            ("config", "cli")
        ])),
        Some(vec![
            "app".into(),
            "config".into(),
            "cli".into(),
            "app".into()
        ])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        named_modules(
            "use crate::store::{Store}; x = ghl_gateway::sync; $crate::y; crate::domain::X"
        ),
        ["store", "domain"]
    );
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the sources were read: {graph:?}");
    assert_eq!(find_cycle(&graph), None, "the module graph: {graph:#?}");
}

#[test]
fn the_layering_rules_hold() {
    let graph = module_graph();
    let uses = |module: &str| graph.get(module).cloned().unwrap_or_default();
    // (module, modules it must not name, why)
    let rules: [(&str, &[&str], &str); 8] = [
        (
            "cache",
            &[
                "store", "graphql", "http", "sync", "upstream", "app", "auth",
            ],
            "cache imports only config",
        ),
        (
            "upstream",
            &["store", "graphql", "sync", "http", "app"],
            "upstream knows nothing of store or GraphQL",
        ),
        (
            "store",
            &["graphql", "upstream", "sync", "http", "app"],
            "store knows nothing of GraphQL or GHL",
        ),
        (
            "graphql",
            &["upstream", "app", "http"],
            "resolvers never call upstream; they ask sync through SyncHandle",
        ),
        (
            "sync",
            &["graphql", "http", "app"],
            "sync uses upstream and store only",
        ),
        (
            "domain",
            &["store", "upstream", "sync", "graphql", "http", "app", "sim"],
            "domain is plain types, no I/O",
        ),
        (
            "config",
            &[
                "app", "cli", "commands", "sync", "upstream", "store", "http", "graphql",
            ],
            "config is a leaf",
        ),
        (
            "telemetry",
            &["app", "cli", "commands", "config"],
            "telemetry is a leaf",
        ),
    ];
    for (module, forbidden, why) in rules {
        let bad: Vec<_> = uses(module)
            .into_iter()
            .filter(|m| forbidden.contains(&m.as_str()))
            .collect();
        assert!(bad.is_empty(), "{module} names {bad:?}: {why}");
    }
    // The simulator is an independent model of GHL: it shares no code with the gateway path.
    let sim: Vec<_> = uses("sim").into_iter().filter(|m| m != "config").collect();
    assert!(sim.is_empty(), "sim names {sim:?}");
    // Only the command line and main sit above the commands.
    for (module, names) in &graph {
        if module != "cli" {
            assert!(!names.contains("cli"), "{module} names cli");
        }
        if !matches!(module.as_str(), "cli" | "commands") {
            assert!(!names.contains("commands"), "{module} names commands");
        }
    }
}
