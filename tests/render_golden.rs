//! The complete `conclave render` output, byte for byte, for every example and for a matrix of
//! Bridges and Meetings (`tests/render/cases/*.yaml`). Any change to what the operator creates
//! shows here as a diff of the golden files under `tests/render/golden/`, so a refactor that
//! claims to change nothing is proven to, and a deliberate change is reviewed as YAML.
//!
//! After a deliberate change: `CONCLAVE_BLESS=1 cargo test --test render_golden`, then review
//! `git diff tests/render/golden`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A case's arguments come from its first line, `# args: ...`, so each input says how it is
/// rendered.
fn args_of(input: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(input).expect("read the case");
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# args:"))
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn render(files: &[PathBuf], args: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.arg("render");
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.args(args).output().expect("conclave runs");
    assert!(
        out.status.success(),
        "conclave render {files:?} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Compares `actual` with the golden file, or rewrites it when blessing. Returns a description
/// of the mismatch, so every case is checked before the test fails.
fn check(golden: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("CONCLAVE_BLESS").is_some() {
        if let Some(dir) = golden.parent() {
            std::fs::create_dir_all(dir).expect("create the golden directory");
        }
        std::fs::write(golden, actual).expect("write the golden file");
        return None;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    if expected == actual {
        return None;
    }
    let first = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    Some(format!(
        "{} differs from `conclave render` at line {} (expected {:?}, got {:?})",
        golden.display(),
        first + 1,
        expected.lines().nth(first).unwrap_or("<end>"),
        actual.lines().nth(first).unwrap_or("<end>"),
    ))
}

fn golden_dir() -> PathBuf {
    common::repo().join("tests/render/golden")
}

#[test]
fn examples_render_exactly_as_recorded() {
    let examples = common::yaml_files("examples");
    assert!(examples.len() >= 4, "examples/ holds the documented examples");
    let actual = render(&examples, &[]);
    if let Some(diff) = check(&golden_dir().join("examples.yaml"), &actual) {
        panic!("{diff}\nif the change is deliberate: CONCLAVE_BLESS=1 cargo test --test render_golden");
    }
}

#[test]
fn matrix_renders_exactly_as_recorded() {
    let cases = common::yaml_files("tests/render/cases");
    assert!(cases.len() >= 5, "the matrix of cases exists");
    let mut diffs = Vec::new();
    let mut seen = Vec::new();
    for case in &cases {
        let name = case.file_name().expect("file name").to_owned();
        seen.push(name.clone());
        let actual = render(std::slice::from_ref(case), &args_of(case));
        diffs.extend(check(&golden_dir().join(&name), &actual));
    }
    // A golden file whose case was removed would go stale unnoticed.
    for golden in common::yaml_files("tests/render/golden") {
        let name = golden.file_name().expect("file name").to_owned();
        if name != "examples.yaml" && !seen.contains(&name) {
            diffs.push(format!("{} has no case in tests/render/cases", golden.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{}\nif the change is deliberate: CONCLAVE_BLESS=1 cargo test --test render_golden",
        diffs.join("\n")
    );
}
