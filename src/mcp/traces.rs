//! The traces a server offers: those of its command line, loaded at start,
//! and the trace files of its `--trace-dir`, loaded when a call first names
//! one. A call's `trace` argument resolves here to a database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use schemars::JsonSchema;
use serde::Serialize;

use super::call::TraceListTool;
use crate::analyzer::db::{self, LoadOptions};

pub struct Traces {
    /// Trace name -> loaded database.
    served: Mutex<BTreeMap<String, PathBuf>>,
    dir: Option<PathBuf>,
    load_opts: LoadOptions,
}

/// A trace a call resolved to.
pub struct Resolved {
    /// The name callers know it by.
    pub name: String,
    pub db: PathBuf,
}

impl Traces {
    pub fn new(load_opts: LoadOptions) -> Traces {
        Traces {
            served: Mutex::new(BTreeMap::new()),
            dir: None,
            load_opts,
        }
    }

    /// Serves a loaded trace under `name`, which must be new.
    pub fn add(&mut self, name: String, db: PathBuf) -> anyhow::Result<()> {
        let served = self
            .served
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if served.contains_key(&name) {
            anyhow::bail!(
                "two traces are named {name:?}: rename one so a model can tell them apart"
            );
        }
        served.insert(name, db);
        Ok(())
    }

    /// Also offers the trace files of `dir`.
    pub fn offer_dir(&mut self, dir: PathBuf) -> anyhow::Result<()> {
        std::fs::read_dir(&dir).with_context(|| format!("--trace-dir {}", dir.display()))?;
        self.dir = Some(dir);
        Ok(())
    }

    fn served(&self) -> MutexGuard<'_, BTreeMap<String, PathBuf>> {
        // A panic while holding the lock leaves the map whole: keep serving.
        self.served.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every trace by name, and whether it is loaded.
    fn list(&self) -> Vec<TraceEntry> {
        let served = self.served();
        let mut traces: Vec<TraceEntry> = served
            .keys()
            .map(|n| TraceEntry {
                name: n.clone(),
                loaded: true,
            })
            .collect();
        if let Some(dir) = &self.dir {
            for n in dir_traces(dir) {
                if !served.contains_key(&n) {
                    traces.push(TraceEntry {
                        name: n,
                        loaded: false,
                    });
                }
            }
        }
        traces
    }

    /// The trace a tool call names (or the only one), loading it from the
    /// trace directory on first use.
    pub async fn resolve(&self, trace: Option<&str>) -> Result<Resolved, String> {
        let (name, dir) = {
            let served = self.served();
            let available = || {
                let mut names: Vec<String> = served.keys().cloned().collect();
                if let Some(dir) = &self.dir {
                    for n in dir_traces(dir) {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
                names
            };
            let name = match trace.map(str::trim).filter(|t| !t.is_empty()) {
                Some(name) => name.to_string(),
                None => match available().as_slice() {
                    [only] => only.clone(),
                    [] => {
                        return Err(
                            "no trace is available: the server was started without traces".into(),
                        );
                    }
                    names => {
                        return Err(format!(
                            "several traces are available: pass trace = one of {names:?}"
                        ));
                    }
                },
            };
            if let Some(db) = served.get(&name) {
                return Ok(Resolved {
                    db: db.clone(),
                    name,
                });
            }
            let unknown = || {
                format!(
                    "unknown trace {name:?}: pass trace = one of {:?}",
                    available()
                )
            };
            let Some(dir) = &self.dir else {
                return Err(unknown());
            };
            // Only a plain file name listed in the directory: no paths, no escapes.
            if name.contains(['/', '\\']) || name.contains("..") || !dir_traces(dir).contains(&name)
            {
                return Err(unknown());
            }
            (name, dir.clone())
        };
        let path = dir.join(&name);
        let opts = self.load_opts.clone();
        eprintln!("schedlens: loading {}", path.display());
        let loaded = tokio::task::spawn_blocking(move || db::load(&path, &opts))
            .await
            .map_err(|e| format!("loading {name} failed: {e}"))?
            .map_err(|e| format!("loading {name} failed: {e:#}"))?;
        self.served().insert(name.clone(), loaded.db_path.clone());
        Ok(Resolved {
            name,
            db: loaded.db_path,
        })
    }
}

/// File names in the trace directory that look like traces.
fn dir_traces(dir: &Path) -> Vec<String> {
    const EXTS: &[&str] = &[
        ".pftrace",
        ".perfetto-trace",
        ".perfetto",
        ".trace",
        ".pb",
        ".proto",
    ];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let base = n
                .strip_suffix(".gz")
                .or_else(|| n.strip_suffix(".zst"))
                .unwrap_or(n);
            !n.starts_with('.') && EXTS.iter().any(|x| base.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------- tool

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceList {
    /// Traces by name.
    pub traces: Vec<TraceEntry>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TraceEntry {
    /// Name to pass as `trace` to the other tools.
    pub name: String,
    /// True if already loaded (otherwise the first call that names it loads it).
    pub loaded: bool,
}

pub const LIST_TRACES: TraceListTool<TraceList> = TraceListTool {
    name: "list_traces",
    description: "The traces this server can open, by name (those given on its command line \
                  and the trace files of its --trace-dir).",
    answer: |traces| TraceList {
        traces: traces.list(),
    },
};
