//! Perfetto's own trace_processor diff tests (../shared/conformance/perfetto):
//! every folder's trace is loaded, its query run, and the result compared with
//! Perfetto's expected CSV line by line (each line stripped, as Perfetto's
//! runner does). The data is Perfetto's (Apache-2.0) and is not copied here.
//!
//! The standard library modules' diff tests are read from a Perfetto source
//! tree by path (see [`perfetto_stdlib_diff_tests`]).

use schedlens::analyzer::{db, query, stdlib};
use std::path::{Path, PathBuf};
use std::process::Command;

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
            let sql = std::fs::read_to_string(case.join("query.sql"))?;
            let (conn, sql) = query::open_for(&db_path, &sql)?;
            let got = query::query_csv(&conn, sql)?;
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

/// Perfetto's diff test suites of the modules schedlens provides, in its
/// source tree.
const STDLIB_SUITES: &[&str] = &[
    "test/trace_processor/diff_tests/stdlib/sched/tests.py",
    "test/trace_processor/diff_tests/stdlib/linux/cpu.py",
];

/// Perfetto's parser tests that read `args`, `raw` or EXTRACT_ARG on ftrace
/// events, none of which can run here, with the reason.
const PARSER_ARGS_CASES_LEFT_OUT: &[(&str, &str)] = &[
    (
        "parser/ftrace/ftrace_crop_tests.py:test_crop_atrace_slice",
        "joins the slice table (atrace slices from print events), which schedlens does not build",
    ),
    (
        "parser/ftrace/ftrace_crop_tests.py:test_crop_atrace_slice_legacy_field",
        "joins the slice table (atrace slices from print events), which schedlens does not build",
    ),
    (
        "parser/parsing/tests.py:test_sched_waking_raw_compact_sched",
        "its trace is DataPath('compact_sched.pb'), a download not available here",
    ),
    (
        "parser/ftrace/generic_ftrace_tests.py:test_",
        "its trace is DataPath('ftrace_dense_generic.pftrace'), a download not available here",
    ),
];

/// A Perfetto source tree: $PERFETTO_SRC (a checkout or a git directory),
/// else the fetched mirror beside the repository (/work/.mirror/google+perfetto/repo).
fn perfetto_source() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PERFETTO_SRC") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .map(|a| a.join(".mirror/google+perfetto/repo"))
        .find(|p| p.is_dir())
}

/// A file of the Perfetto tree: from the work tree, or from a git
/// directory's HEAD.
fn perfetto_file(src: &Path, path: &str) -> String {
    if let Ok(text) = std::fs::read_to_string(src.join(path)) {
        return text;
    }
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(src)
        .args(["show", &format!("HEAD:{path}")])
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "cannot read {path} from {}",
        src.display()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One `def test_x(self): return DiffTestBlueprint(trace=..., query=..., out=...)`.
struct Blueprint {
    name: String,
    trace: String,
    query: Option<String>,
    out: Option<String>,
}

/// The text of the first `"""..."""` after `key` in `body`.
fn triple_quoted(body: &str, key: &str) -> Option<String> {
    let at = body.find(key)? + key.len();
    let rest = &body[at..];
    let open = rest.find("\"\"\"")?;
    // Only when the string is the argument itself (query="""), or Csv(""").
    if !rest[..open]
        .trim_start_matches(['r', 'C', 's', 'v', '('])
        .trim()
        .is_empty()
    {
        return None;
    }
    let text = &rest[open + 3..];
    Some(text[..text.find("\"\"\"")?].to_string())
}

fn blueprints(suite: &str) -> Vec<Blueprint> {
    let mut out = Vec::new();
    for chunk in suite.split("\n  def ").skip(1) {
        let name = chunk.split('(').next().unwrap_or("").to_string();
        let trace = chunk
            .split("trace=")
            .nth(1)
            .map(|t| t.split([',', '\n']).next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        out.push(Blueprint {
            name,
            trace,
            query: triple_quoted(chunk, "query="),
            out: triple_quoted(chunk, "out=Csv("),
        });
    }
    out
}

/// Perfetto's normalisation of a query: dedented, trimmed.
fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// Perfetto's stdlib diff tests of the modules schedlens provides. A case
/// runs when its trace is one the shared conformance data holds
/// (synth_1.py, converted there); every other case is left out with its
/// reason, printed, and the set of run cases must not shrink unnoticed.
#[test]
#[ignore = "reads Perfetto's source tree (PERFETTO_SRC or the fetched mirror); scripts/test.sh runs it when one is there"]
fn perfetto_stdlib_diff_tests() {
    let src = perfetto_source().expect(
        "Perfetto's source tree is needed for its stdlib diff tests: set PERFETTO_SRC to a \
         checkout (or its git directory)",
    );
    // synth_1.py's trace, as convert.py wrote it for the smoke test.
    let synth_1 =
        conformance_dir().join("parser_smoke_tests_sched_events__test_synth_1_smoke/trace.pftrace");
    assert!(synth_1.is_file(), "missing {}", synth_1.display());
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("synth_1.db");
    db::build_into(&synth_1, &db_path).unwrap();
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    for suite in STDLIB_SUITES {
        for b in blueprints(&perfetto_file(&src, suite)) {
            let case = format!("{suite}:{}", b.name);
            let query = b.query.as_deref().map(dedent).unwrap_or_default();
            let includes = stdlib::split_includes(&query);
            let why_not = if let Err(e) = &includes {
                Some(format!(
                    "it includes a module schedlens does not provide ({e:.60})"
                ))
            } else if b.trace != "Path('../../common/synth_1.py')" {
                Some(format!("its trace is {}, not available here", b.trace))
            } else if b.out.is_none() || b.query.is_none() {
                Some("its query or output is in a separate file".to_string())
            } else {
                None
            };
            if let Some(why) = why_not {
                eprintln!("left out {case}: {why}");
                continue;
            }
            let result = (|| -> anyhow::Result<()> {
                let (conn, sql) = query::open_for(&db_path, &query)?;
                let got = query::query_csv(&conn, sql)?;
                let want = b.out.as_deref().unwrap_or_default();
                let (got, want) = (strip_lines(&got), strip_lines(want));
                anyhow::ensure!(
                    got == want,
                    "output differs\n--- expected\n{}\n--- got\n{}",
                    want.join("\n"),
                    got.join("\n")
                );
                Ok(())
            })();
            match result {
                Ok(()) => ran.push(case),
                Err(e) => failures.push(format!("{case}: {e:#}")),
            }
        }
    }
    for (case, why) in PARSER_ARGS_CASES_LEFT_OUT {
        eprintln!("left out {case}: {why}");
    }
    eprintln!("stdlib conformance: {} passed: {ran:?}", ran.len());
    assert!(
        failures.is_empty(),
        "{} failing:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        ran,
        [
            "test/trace_processor/diff_tests/stdlib/sched/tests.py:test_runnable_thread_count",
            "test/trace_processor/diff_tests/stdlib/sched/tests.py:test_active_cpu_count",
        ]
    );
}
