//! The architecture as rules a change cannot break unnoticed: inside every crate the modules form a DAG
//! (a module may use its own descendants and its ancestors' items, and no circle through siblings), the
//! core names no CUDA type, and no test launches a kernel itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file relative to its crate's `src/` (`model/mod.rs` → `["model"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source without its `#[cfg(test)] mod tests { … }` tail (test code may reach anywhere).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The modules `crate::…` paths in `text` name: the longest prefix of each path that is a module.
fn crate_references(text: &str, modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `attnscope_crate::`-like identifiers
        }
        let rest = &text[i + "crate::".len()..];
        let segs: Vec<String> = rest
            .split("::")
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|s| !s.is_empty())
            .collect();
        if let Some(n) = (1..=segs.len())
            .rev()
            .find(|&n| modules.contains(&segs[..n]))
        {
            out.insert(segs[..n].to_vec());
        }
    }
    out
}

/// A module-level circle in `edges`, if any.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        u: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(u.clone(), 1);
        stack.push(u.clone());
        for v in edges.get(u).into_iter().flatten() {
            match state.get(v) {
                Some(1) => {
                    let start = stack.iter().position(|m| m == v).unwrap_or(0);
                    return Some(stack[start..].to_vec());
                }
                None => {
                    if let Some(c) = visit(v, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(u.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for u in edges.keys() {
        if !state.contains_key(u)
            && let Some(c) = visit(u, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_of_every_crate_form_a_dag() {
    let crates = common::repo().join("crates");
    let mut checked = 0;
    for entry in fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for f in &files {
            let m = module_of(&src, f);
            let text = fs::read_to_string(f).unwrap();
            for t in crate_references(without_tests(&text), &modules) {
                // Using a descendant (its declaration, a re-export) is not a dependency edge.
                if !t.starts_with(&m) {
                    edges.entry(m.clone()).or_default().insert(t);
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{}: modules in a circle: {cycle:?}", src.display());
        }
        checked += modules.len();
    }
    assert!(checked > 40, "only {checked} modules found under crates/");
}

#[test]
fn the_core_names_no_cuda_type() {
    let core = common::repo().join("crates/attnscope-core");
    let manifest = fs::read_to_string(core.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("cudarc"),
        "attnscope-core depends on cudarc"
    );
    let mut files = Vec::new();
    rust_files(&core.join("src"), &mut files);
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for needle in ["cudarc", "attnscope_cuda", "CudaSlice", "GpuContext"] {
            assert!(!text.contains(needle), "{} names {needle}", f.display());
        }
    }
}

#[test]
fn tests_launch_kernels_only_through_the_engine_launchers() {
    let mut files = Vec::new();
    rust_files(&common::repo().join("tests"), &mut files);
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for needle in ["launch_builder", "load_function", "compile_kernel("] {
            assert!(
                !text.contains(needle)
                    || f.ends_with("architecture.rs")
                    || f.ends_with("nvrtc_compile.rs"),
                "{} uses {needle}: launch through attnscope_cuda::ops",
                f.display()
            );
        }
    }
}

#[test]
fn one_seeded_generator() {
    // The constants of splitmix64 and of the usual 64-bit LCG: a second generator would bring one along.
    let constants = [
        "0x9E37_79B9_7F4A_7C15",
        "0x9e3779b97f4a7c15",
        "6364136223846793005",
    ];
    let repo = common::repo();
    let mut files = Vec::new();
    for dir in ["crates", "src", "tests", "benches"] {
        rust_files(&repo.join(dir), &mut files);
    }
    for f in files {
        if f.ends_with("attnscope-core/src/rng.rs") || f.ends_with("architecture.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap().to_lowercase();
        for c in constants {
            assert!(
                !text.contains(&c.to_lowercase()),
                "{} has a random generator of its own ({c}); use attnscope_core::rng",
                f.display()
            );
        }
    }
}
