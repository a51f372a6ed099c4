//! The crate's layers, checked: every `crate::<module>` a file of `src/` refers to (in `use`
//! lines and paths, test code included) must sit on a lower level than the file's own module.
//! The table below is the one source of the order; the doc comment of `lib.rs` mirrors it, and
//! a test here checks that the two agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The modules of the crate, top to bottom. A module may refer to modules on lower levels
/// only; modules on one level do not refer to each other unless `SAME_LEVEL` says so.
const LEVELS: &[&[&str]] = &[
    &["cli"],
    &["demo"],
    &["daemon"],
    &["api"],
    &["agent", "orchestrator", "membership"],
    &["control", "config"],
    &["validate"],
    &["store"],
    &["topology"],
    &["wire", "listeners"],
    &["model", "ipam", "layout", "whoami", "memory"],
];

/// `(from, to)` pairs on one level that may refer to each other. Keep it short: every entry
/// is a cycle waiting to happen.
const SAME_LEVEL: &[(&str, &str)] = &[];

/// Files of `src/` that belong to no module of the table: the crate roots and this test.
const ROOTS: &[&str] = &["lib.rs", "main.rs", "layers.rs"];

fn level(module: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module a file of `src/` belongs to: `src/control/service.rs` -> `control`.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    if ROOTS.contains(&first) {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

/// The code of a Rust file with comments, strings and character literals blanked out, so that
/// only real paths are found.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // 'x' or '\n' is a character; 'a without a closing quote is a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && is_ident(chars[i - 1])
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The top-level modules named by `crate::` paths in `code`: `crate::store::keys` and
/// `crate::{model::Task, store}` name `store`, `model` and `store`.
fn crate_refs(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let pattern: Vec<char> = "crate::".chars().collect();
    let mut refs = Vec::new();
    let mut i = 0;
    while i + pattern.len() <= chars.len() {
        if chars[i..i + pattern.len()] == pattern[..] && !ident_before(&chars, i) {
            i += pattern.len();
            heads(&chars, &mut i, &mut refs);
        } else {
            i += 1;
        }
    }
    refs
}

/// Reads the first segment of each path at `chars[*i..]`: an identifier, or a `{...}` group of
/// paths (nested groups name no further top-level modules).
fn heads(chars: &[char], i: &mut usize, refs: &mut Vec<String>) {
    while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
        *i += 1;
    }
    if chars.get(*i) == Some(&'{') {
        *i += 1;
        let mut depth = 0;
        let mut at_start = true;
        while let Some(&c) = chars.get(*i) {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    *i += 1;
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => at_start = true,
                c if at_start && is_ident(c) => {
                    refs.push(ident(chars, i));
                    at_start = false;
                    continue;
                }
                c if !c.is_whitespace() => at_start = false,
                _ => {}
            }
            *i += 1;
        }
    } else {
        refs.push(ident(chars, i));
    }
}

fn ident(chars: &[char], i: &mut usize) -> String {
    let start = *i;
    while chars.get(*i).is_some_and(|&c| is_ident(c)) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

#[test]
fn modules_use_only_the_levels_below_their_own() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut wrong = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&root).unwrap_or(path);
        let Some(from) = module_of(relative) else {
            continue;
        };
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let refs: BTreeSet<String> = crate_refs(&code_only(&text)).into_iter().collect();
        for to in refs.iter().filter(|to| **to != from) {
            let place = format!("src/{}: crate::{to}", relative.display());
            match (level(&from), level(to)) {
                (None, _) => wrong.push(format!("{place}: module {from} has no level")),
                (_, None) => wrong.push(format!("{place}: module {to} has no level")),
                (Some(f), Some(t)) if t > f => {}
                (Some(f), Some(t)) if t == f && SAME_LEVEL.contains(&(from.as_str(), to)) => {}
                (Some(f), Some(t)) if t == f => wrong.push(format!(
                    "{place}: {from} and {to} share level {} (allow it in SAME_LEVEL, or move one)",
                    f + 1
                )),
                (Some(f), Some(t)) => wrong.push(format!(
                    "{place}: {from} (level {}) uses {to}, which is above it (level {})",
                    f + 1,
                    t + 1
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order (src/layers.rs):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_has_one_level() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap_or_default();
    let mut declared = BTreeSet::new();
    let mut test_only = false;
    for line in lib.lines().map(str::trim) {
        if line == "#[cfg(test)]" {
            test_only = true;
            continue;
        }
        let name = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'));
        if let (Some(name), false) = (name, test_only) {
            declared.insert(name.to_string());
        }
        test_only = false;
    }
    let table: Vec<&str> = LEVELS.iter().flat_map(|l| l.iter().copied()).collect();
    let tabled: BTreeSet<String> = table.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        table.len(),
        tabled.len(),
        "a module on two levels: {table:?}"
    );
    assert_eq!(
        declared, tabled,
        "lib.rs's modules and the layer table differ"
    );
    for (from, to) in SAME_LEVEL {
        assert!(
            level(from).is_some() && level(from) == level(to),
            "SAME_LEVEL ({from}, {to}): not one level"
        );
    }
}

#[test]
fn the_lib_doc_shows_this_table() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap_or_default();
    // Lines like "//! 5. `agent`, `orchestrator`, `membership`: ..." list one level each.
    let doc: Vec<Vec<String>> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .filter_map(|l| {
            let (number, rest) = l.split_once(". ")?;
            number.parse::<usize>().ok()?;
            let names = rest.split(':').next().unwrap_or_default();
            Some(
                names
                    .split(',')
                    .map(|n| n.trim().trim_matches('`').to_string())
                    .collect(),
            )
        })
        .collect();
    let table: Vec<Vec<String>> = LEVELS
        .iter()
        .map(|l| l.iter().map(|m| m.to_string()).collect())
        .collect();
    assert_eq!(doc, table, "lib.rs's doc and src/layers.rs's LEVELS differ");
}

#[test]
fn references_are_found_in_code_only() {
    let code = code_only(
        "use crate::store::{keys, Txn};\n\
         use crate::{model::Task, wire::{A, B}, ipam};\n\
         // crate::cli in a comment\n\
         /* crate::daemon /* nested */ crate::demo */\n\
         let s = \"crate::api\"; let r = r#\"crate::agent\"#; let c = '\"';\n\
         fn f<'a>(x: &'a str) -> Option<crate::layout::RunDir> { $crate::x; my_crate::y }\n",
    );
    let refs = crate_refs(&code);
    assert_eq!(refs, ["store", "model", "wire", "ipam", "layout"]);
}
