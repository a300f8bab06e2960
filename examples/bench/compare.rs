//! `bench --compare OTHER`: figure 1's pinned pipe ping-pong under this
//! schedlens and under another build of it (the previous commit, say),
//! interleaved round by round with runs without tracing, so a change to the
//! recording path is measured side by side on the same noisy machine.

use crate::measure::Stat;
use crate::opts::Opts;
use crate::overhead::{
    Condition, DEFAULT_CONFIG, PIPE_LOOPS, parse_usecs_per_op, pipe_workload, run_condition,
};
use anyhow::Result;
use std::path::Path;

pub fn compare(o: &Opts, other: &Path) -> Result<()> {
    let theirs = Opts {
        schedlens: other.to_path_buf(),
        ..o.clone()
    };
    let conditions = [
        ("no tracing", Condition::Baseline, o),
        ("schedlens", Condition::Schedlens(DEFAULT_CONFIG), o),
        ("compared", Condition::Schedlens(DEFAULT_CONFIG), &theirs),
    ];
    let workload = pipe_workload(if o.smoke { PIPE_LOOPS.0 } else { PIPE_LOOPS.1 });
    let mut values = vec![Vec::new(); conditions.len()];
    let mut lost = vec![0u64; conditions.len()];
    for round in 0..o.runs {
        // Rotate the order each round so no condition always runs first.
        for i in 0..conditions.len() {
            let c = (round + i) % conditions.len();
            let (name, cond, opts) = conditions[c];
            let run = run_condition(opts, cond, &workload, &format!("compare-{round}"))?;
            let value = parse_usecs_per_op(&run.text)?;
            values[c].push(value);
            lost[c] += run.counts.map_or(0, |n| n.lost);
            eprintln!("  round {round} {name}: {value:.3} usecs/op");
        }
    }
    // The load moves between rounds far more than the builds differ, so each
    // traced run is also taken relative to the same round's untraced run.
    let paired = |c: usize| -> Vec<f64> {
        values[c]
            .iter()
            .zip(&values[0])
            .map(|(v, base)| (v / base - 1.0) * 100.0)
            .collect()
    };
    let stats: Vec<Stat> = values.iter().map(|v| Stat::of(v)).collect();
    let mut t = comfy_table::Table::new();
    t.set_header([
        "condition",
        "binary",
        "usecs/op (median, min..max)",
        "slowdown in its round (median, min..max)",
        "lost",
    ]);
    for (c, (((name, cond, opts), s), lost)) in conditions.iter().zip(&stats).zip(&lost).enumerate()
    {
        let (binary, slowdown) = match cond {
            Condition::Baseline => ("-".to_string(), "-".to_string()),
            _ => {
                let p = Stat::of(&paired(c));
                (
                    opts.schedlens.display().to_string(),
                    format!("{:+.1}% ({:+.1}..{:+.1})", p.median, p.min, p.max),
                )
            }
        };
        t.add_row([
            name.to_string(),
            binary,
            format!("{:.3} ({:.3}..{:.3})", s.median, s.min, s.max),
            slowdown,
            lost.to_string(),
        ]);
    }
    println!("{t}");
    let ours_vs_theirs: Vec<f64> = values[1]
        .iter()
        .zip(&values[2])
        .map(|(ours, theirs)| (ours / theirs - 1.0) * 100.0)
        .collect();
    let r = Stat::of(&ours_vs_theirs);
    println!(
        "schedlens against compared, round by round: {:+.1}% ({:+.1}..{:+.1})",
        r.median, r.min, r.max
    );
    println!(
        "{} runs per condition, interleaved; {}",
        o.runs,
        workload.join(" ")
    );
    Ok(())
}
