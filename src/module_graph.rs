//! Keeps the module map in `lib.rs` true: every top-level module is listed
//! there, and each imports (`crate::…`, in code or tests) only modules on
//! lines below its own. Modules named on one line are peers and import
//! none of each other. So the graph has no cycle and the map is its order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The map's lines, top first: each a set of module names.
fn levels(lib: &str) -> Vec<Vec<String>> {
    lib.lines()
        .map_while(|l| l.strip_prefix("//!"))
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .map(|item| {
            let names = item.split_once(':').map_or(item, |(n, _)| n);
            names
                .split(',')
                .filter_map(|n| n.trim().strip_prefix("[`")?.strip_suffix("`]"))
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The top-level modules `text` names after `crate::`, comments left out.
fn imports(text: &str) -> BTreeSet<String> {
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let code = code.join("\n");
    let mut found = BTreeSet::new();
    {
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::x, b}`: the first segment of each item.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            found.insert(ident(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident(rest));
            }
        }
    }
    found.remove("");
    found
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Each top-level module's imports of other top-level modules, with the
/// file that makes each.
fn graph(src: &Path, modules: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut graph = BTreeMap::new();
    for m in modules {
        let mut files = Vec::new();
        rust_files(&src.join(format!("{m}.rs")), &mut files);
        rust_files(&src.join(m), &mut files);
        let mut deps = BTreeMap::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for d in imports(&text).into_iter().filter(|d| d != m) {
                let shown = f.strip_prefix(src).unwrap_or(&f).display().to_string();
                deps.entry(d).or_insert(shown);
            }
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

#[test]
fn modules_import_only_modules_listed_below_them_in_the_lib_rs_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let levels = levels(&lib);
    let level: BTreeMap<&str, usize> = levels
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let mapped: BTreeSet<String> = level.keys().map(|s| s.to_string()).collect();
    assert_eq!(declared, mapped, "lib.rs's map lists exactly its modules");

    let modules: Vec<String> = declared.into_iter().collect();
    let mut wrong = Vec::new();
    for (m, deps) in graph(&src, &modules) {
        for (d, file) in deps {
            let Some(&below) = level.get(d.as_str()) else {
                continue; // a name after `crate::` that is not a module (a re-export)
            };
            if below <= level[m.as_str()] {
                wrong.push(format!("{m} -> {d} ({file})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the order of lib.rs's module map:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn imports_are_found_in_paths_and_use_groups_but_not_in_comments() {
    let text = "use crate::a::X;\nuse crate::{\n    b::Y,\n    c, d::{e, f}};\n// crate::g\nlet x = crate::h::f(); // crate::i\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "h"]);
    let map = "//! - [`server`]: x\n//! - [`a`], [`b`]: y, z\n//!\nuse x;\n";
    assert_eq!(levels(map), [vec!["server"], vec!["a", "b"]]);
}
