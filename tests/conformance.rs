//! Perfetto's own trace_processor diff tests (../shared/conformance/perfetto):
//! every folder's trace is loaded, its query run, and the result compared with
//! Perfetto's expected CSV line by line (each line stripped, as Perfetto's
//! runner does). The data is Perfetto's (Apache-2.0) and is not copied here.

use schedlens::analyzer::{db, query};
use std::path::PathBuf;

/// Cases not run, with the reason. Empty: every case passes on our tables.
const EXCLUDED: &[(&str, &str)] = &[];

/// `../shared/conformance/perfetto` from the repository root; a git worktree
/// one level further down (e.g. wt/NAME) finds the same folder higher up.
fn conformance_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .skip(1)
        .map(|a| a.join("shared/conformance/perfetto"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.join("../shared/conformance/perfetto"))
}

fn strip_lines(s: &str) -> Vec<String> {
    let lines: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    let start = lines.iter().position(|l| !l.is_empty()).unwrap_or(end);
    lines[start..end].to_vec()
}

#[test]
fn perfetto_diff_tests() {
    let dir = conformance_dir();
    assert!(
        dir.is_dir(),
        "Perfetto conformance data missing: expected {} (the shared/conformance/perfetto folder beside the repo)",
        dir.display()
    );
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list conformance dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut passed = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if EXCLUDED.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let db_path = tmp.path().join(format!("{name}.db"));
        let result = (|| -> anyhow::Result<()> {
            db::build_into(&case.join("trace.pftrace"), &db_path)?;
            let conn = db::open_readonly(&db_path)?;
            let sql = std::fs::read_to_string(case.join("query.sql"))?;
            let got = query::query_csv(&conn, &sql)?;
            let want = std::fs::read_to_string(case.join("expected.csv"))?;
            let (got, want) = (strip_lines(&got), strip_lines(&want));
            if got != want {
                anyhow::bail!(
                    "output differs\n--- expected\n{}\n--- got\n{}",
                    want.join("\n"),
                    got.join("\n")
                );
            }
            Ok(())
        })();
        match result {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    eprintln!(
        "conformance: {passed}/{} passed, {} excluded",
        cases.len(),
        EXCLUDED.len()
    );
    assert!(
        failures.is_empty(),
        "{} failing:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
