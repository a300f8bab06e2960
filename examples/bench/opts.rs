//! The benchmark's command line.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Opts {
    pub smoke: bool,
    pub schedlens: PathBuf,
    pub work: PathBuf,
    pub json_out: PathBuf,
    pub runs: usize,
    /// Only figure 5, on this trace.
    pub analyze_only: Option<PathBuf>,
    /// Only figure 1's pipe, with this other schedlens binary beside ours.
    pub compare: Option<PathBuf>,
    /// Only figure 6.
    pub context_only: bool,
}

impl Opts {
    pub fn parse() -> Result<Opts> {
        let mut smoke = false;
        let mut schedlens = PathBuf::from("target/release/schedlens");
        let mut json_out = PathBuf::from("bench/results.json");
        let mut work = std::env::temp_dir().join("schedlens-bench");
        let mut runs = None;
        let mut analyze_only = None;
        let mut compare = None;
        let mut context_only = false;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--smoke" => smoke = true,
                "--schedlens" => schedlens = value()?.into(),
                "--json" => json_out = value()?.into(),
                "--work-dir" => work = value()?.into(),
                "--runs" => runs = Some(value()?.parse().context("--runs takes a number")?),
                "--analyze" => analyze_only = Some(value()?.into()),
                "--compare" => compare = Some(value()?.into()),
                "--context" => context_only = true,
                "-h" | "--help" => {
                    println!(
                        "usage: bench [--smoke] [--runs N] [--schedlens PATH] [--json PATH] [--work-dir DIR]\n       bench --analyze TRACE   (figure 5 only, on a recording of your own)\n       bench --compare OTHER   (figure 1's pipe only, under --schedlens and under OTHER, another build)\n       bench --context [--smoke]   (figure 6 only: event groups' rates and BPF costs, symbolization)"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        let runs = runs.unwrap_or(if smoke { 1 } else { 7 });
        Ok(Opts {
            smoke,
            schedlens,
            work,
            json_out,
            runs,
            analyze_only,
            compare,
            context_only,
        })
    }
}
