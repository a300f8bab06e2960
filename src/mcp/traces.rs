//! The traces a server offers: those of its command line, loaded at start,
//! and the trace files of its `--trace-dir`, loaded when a call first names
//! one. A call's `trace` argument resolves here to a database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use schemars::JsonSchema;
use serde::Serialize;

use super::call::TraceListTool;
use crate::analyses::metadata::{meta_str, wall_clock};
use crate::analyses::timespec::trace_bounds;
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

    /// Serves a trace loaded while serving (a recording) under `name`, which must be new.
    pub fn insert(&self, name: String, db: PathBuf) -> Result<(), String> {
        let mut served = self.served();
        if served.contains_key(&name) {
            return Err(format!("a trace named {name:?} is served already"));
        }
        served.insert(name, db);
        Ok(())
    }

    /// How this server loads traces.
    pub fn load_options(&self) -> LoadOptions {
        self.load_opts.clone()
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

    /// Every trace's name, in list order.
    pub(super) fn names(&self) -> Vec<String> {
        self.list().into_iter().map(|t| t.name).collect()
    }

    /// Every trace by name, and whether it is loaded.
    fn list(&self) -> Vec<TraceEntry> {
        let served = self.served();
        let mut traces: Vec<TraceEntry> = served
            .keys()
            .map(|n| TraceEntry {
                name: n.clone(),
                loaded: true,
                host: None,
                start_wall_clock: None,
            })
            .collect();
        if let Some(dir) = &self.dir {
            for n in dir_traces(dir) {
                if !served.contains_key(&n) {
                    traces.push(TraceEntry {
                        name: n,
                        loaded: false,
                        host: None,
                        start_wall_clock: None,
                    });
                }
            }
        }
        traces
    }

    /// [`Traces::list`] with the host and start of each loaded trace, from
    /// its database.
    fn list_described(&self) -> Vec<TraceEntry> {
        let mut traces = self.list();
        let served = self.served().clone();
        for t in &mut traces {
            let Some(conn) = served
                .get(&t.name)
                .and_then(|db| db::open_readonly(db).ok())
            else {
                continue;
            };
            t.host = meta_str(&conn, "host_name").ok().flatten();
            t.start_wall_clock = trace_bounds(&conn)
                .ok()
                .and_then(|b| wall_clock(&conn, b.start_ts).ok().flatten());
        }
        traces
    }

    /// The trace a tool call names (or the only one), loading it from the
    /// trace directory on first use; `cancel` stops that load.
    pub async fn resolve(
        &self,
        trace: Option<&str>,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Resolved, String> {
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
        let opts = LoadOptions {
            cancel,
            ..self.load_opts.clone()
        };
        eprintln!("schedlens: loading {name} of {}", dir.display());
        let file = name.clone();
        let loaded = tokio::task::spawn_blocking(move || load_dir_trace(&dir, &file, &opts))
            .await
            .map_err(|e| format!("loading {name} failed: {e}"))??;
        self.served().insert(name.clone(), loaded.db_path.clone());
        Ok(Resolved {
            name,
            db: loaded.db_path,
        })
    }
}

/// Loads the file `name` of the trace directory `dir`, as a model asked:
/// only a regular file directly in the directory, opened without following a
/// link (whatever replaced the listed file since) and without blocking (a
/// FIFO would block the open forever). Errors name the file, never its
/// contents nor where a link pointed.
fn load_dir_trace(dir: &Path, name: &str, opts: &LoadOptions) -> Result<db::LoadedTrace, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |why: &str| format!("loading {name} failed: {why}");
    if name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(failed("not a file of the trace directory"));
    }
    let dir = std::fs::canonicalize(dir).map_err(|_| failed("the trace directory is gone"))?;
    let path = dir.join(name);
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => failed("it is a symbolic link; only regular files are served"),
            _ => failed(&format!("cannot open it ({})", e.kind())),
        })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(failed("not a regular file"));
    }
    // The path is the directory's own (the user chose it); an error's text
    // comes from our checks, which quote no file contents.
    db::load_file(&path, file, opts).map_err(|e| failed(&format!("{e:#}")))
}

/// File names in the trace directory that look like traces: regular files
/// only (not links, which could lead out of the directory, nor FIFOs).
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
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
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
    /// False until a call names it (and loads it); host and start are null till then.
    pub loaded: bool,
    /// Recorder's host name.
    pub host: Option<String>,
    /// First event, RFC 3339 UTC.
    pub start_wall_clock: Option<String>,
}

pub const LIST_TRACES: TraceListTool<TraceList> = TraceListTool {
    name: "list_traces",
    description: "Traces served (command line, --trace-dir): name; host and start once loaded.",
    answer: |traces| TraceList {
        traces: traces.list_described(),
    },
};
