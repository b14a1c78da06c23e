//! The layers of the crate, as docs/ARCHITECTURE.md states them, held against the code:
//! every module has a layer, no `crate::` reference outside tests runs up the order, and
//! no modules import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers in order, lowest first, each with its modules, read from the table under
/// `## Layers` in docs/ARCHITECTURE.md (`| N. name | `a`, `b` |`).
fn layers_of_the_doc() -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut out = Vec::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let modules: Vec<String> = modules
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        if !modules.is_empty() && !name.starts_with('-') {
            out.push(((*name).to_owned(), modules));
        }
    }
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file that is not a test: a file named `tests.rs` or in a `tests`
/// folder has none, and a file's `#[cfg(test)] mod` (at its end, by the house's habit)
/// is cut off.
fn production(path: &Path) -> String {
    let in_tests = path.parent().is_some_and(|d| d.ends_with("tests"));
    if in_tests || path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let mut cut = text.len();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let at = from + at;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let rest = rest.strip_prefix("pub(crate) ").unwrap_or(rest);
        if rest.starts_with("mod ") {
            cut = at;
            break;
        }
        from = at + 1;
    }
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a text names through `crate::`: `crate::audit::Record`, and each name in
/// `use crate::{audit, config::Config}`.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find(';').unwrap_or(group.len())];
            // Top-level names of the group: after `{` or `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Each top-level module of src/ and the modules it references outside its tests.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "main" || module == "lib" {
            continue;
        }
        let refs = crate_references(&production(f));
        out.entry(module.clone()).or_default().extend(refs);
    }
    let modules: BTreeSet<String> = out.keys().cloned().collect();
    for (m, refs) in &mut out {
        refs.retain(|r| r != m && modules.contains(r));
    }
    out
}

#[test]
fn every_module_has_one_layer_in_the_architecture() {
    let layers = layers_of_the_doc();
    assert!(layers.len() >= 6, "the doc lists its layers: {layers:?}");
    let mut placed: BTreeMap<&str, &str> = BTreeMap::new();
    for (layer, modules) in &layers {
        for m in modules {
            assert!(
                placed.insert(m, layer).is_none(),
                "`{m}` stands in two layers"
            );
        }
    }
    let code: BTreeSet<String> = imports().into_keys().collect();
    let doc: BTreeSet<String> = placed.keys().map(|m| (*m).to_owned()).collect();
    assert_eq!(
        code, doc,
        "the modules of src/ and the layers of docs/ARCHITECTURE.md name the same modules"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let layers = layers_of_the_doc();
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut upward = Vec::new();
    for (m, refs) in imports() {
        let Some(&own) = rank.get(m.as_str()) else {
            continue;
        };
        for r in refs {
            if rank.get(r.as_str()).is_some_and(|&theirs| theirs > own) {
                upward.push(format!(
                    "{m} ({}) -> {r} ({})",
                    layers[own].0,
                    layers[rank[r.as_str()]].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up the layers: {upward:#?}"
    );
}

/// Depth-first search from `m`; a module met again while still on the path closes a
/// circle, which is returned.
fn visit<'a>(
    m: &'a str,
    graph: &'a BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| *p == m) {
        let mut circle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
        circle.push(m.to_owned());
        return Some(circle);
    }
    if !done.insert(m) {
        return None;
    }
    path.push(m);
    for r in graph.get(m).into_iter().flatten() {
        if let Some(c) = visit(r, graph, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = imports();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let circle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert_eq!(circle, None, "modules that import each other in a circle");
    }
}

#[test]
fn the_reader_of_references_sees_groups_and_paths_and_no_other_crate() {
    let refs = crate_references(
        "use crate::{audit::{self, Record}, config::Config};\nlet x = crate::procs::read();\n\
         let y = my_crate::other::f();",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["audit", "config", "procs"]
    );
}
