//! The results as a table on stdout, each figure against its target.

use crate::Report;
use crate::analyze::AnalyzeFigure;
use crate::context::ContextFigure;

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

pub fn print_table(r: &Report) {
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "schedlens", "baseline / perf", "target", ""]);
    let p = &r.pipe;
    let perf_pct = p.perf_slowdown_pct;
    for c in &p.configs {
        // The targets: the default groups within 1/4 of perf's slowdown
        // (and sched alone within 1/3), off-CPU stacks within half, CPU
        // samples within 2 points of sched alone.
        let (target, ok) = match c.config.flags {
            [] => (
                "<= 1/4 of perf's".to_string(),
                c.slowdown_pct <= perf_pct / 4.0,
            ),
            ["--events", "sched"] => ("<= 1/3 of perf's".into(), c.slowdown_pct <= perf_pct / 3.0),
            ["--stacks", "off-cpu"] => {
                ("<= 1/2 of perf's".into(), c.slowdown_pct <= perf_pct / 2.0)
            }
            ["--stacks", "cpu"] => (
                "within 2 points of the default".into(),
                c.slowdown_pct - p.configs[0].slowdown_pct <= 2.0,
            ),
            _ => ("-".into(), true),
        };
        t.add_row([
            format!(
                "1. slowdown, pinned perf bench sched pipe, {}",
                c.config.name
            ),
            format!(
                "{:+.1}% ({:.2} B/event, {:.2} B/switch, {} lost)",
                c.slowdown_pct, c.bytes_per_event.median, c.bytes_per_switch.median, c.lost
            ),
            format!("perf sched record {perf_pct:+.1}%"),
            target,
            verdict(ok).into(),
        ]);
    }
    let m = &r.messaging;
    t.add_row([
        "1. slowdown, perf bench sched messaging".to_string(),
        format!("{:+.1}%", m.schedlens_slowdown_pct),
        format!("perf sched record {:+.1}%", m.perf_slowdown_pct),
        "-".into(),
        "".into(),
    ]);
    let rec = &r.recording;
    t.add_row([
        "2. highest rate with zero drops".to_string(),
        format!("{:.0} events/s", rec.max_zero_drop_events_per_sec),
        rec.levels
            .iter()
            .map(|l| {
                format!(
                    "{:.0}/s: {} lost, ring {}% full",
                    l.events_per_sec, l.lost, l.ring_peak_fill_pct
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        ">= 1,000,000 events/s".into(),
        verdict(rec.max_zero_drop_events_per_sec >= 1e6).into(),
    ]);
    let bpe = p.schedlens_bytes_per_event.median;
    t.add_row([
        "3. bytes per event on disk".to_string(),
        format!("{bpe:.2} B"),
        format!("perf.data {:.1} B", p.perf_bytes_per_event.median),
        "<= 4 B".into(),
        verdict(bpe <= 4.0).into(),
    ]);
    t.add_row([
        "4. recorder CPU per event (busiest load)".to_string(),
        format!("{:.0} ns", rec.recorder_ns_per_event),
        "-".into(),
        "<= 150 ns".into(),
        verdict(rec.recorder_ns_per_event <= 150.0).into(),
    ]);
    let first = rec.rss_samples_mib.first().copied().unwrap_or(f64::NAN);
    let last = rec.rss_samples_mib.last().copied().unwrap_or(f64::NAN);
    t.add_row([
        "4. recorder peak RSS".to_string(),
        format!("{:.1} MiB", rec.recorder_max_rss_mib),
        format!("VmRSS {first:.1} -> {last:.1} MiB"),
        "flat, < 64 MiB".into(),
        verdict(rec.recorder_max_rss_mib < 64.0).into(),
    ]);
    context_rows(&mut t, &r.context);
    if let Some(a) = &r.analyze {
        analyze_rows(&mut t, a);
    }
    println!("{t}");
    println!(
        "{} runs per condition, interleaved; medians. Machine: {} CPUs, {}, Linux {}.{}",
        r.pipe.baseline.n,
        r.cpus,
        r.machine,
        r.kernel,
        if r.smoke {
            " SMOKE RUN: sizes too small for the figures to mean anything."
        } else {
            ""
        }
    );
}

/// Figure 5's rows. `query` runs whatever SQL it is given, so its figure (a
/// GROUP BY over every slice) is shown apart from the analysis tools'.
pub fn analyze_rows(t: &mut comfy_table::Table, a: &AnalyzeFigure) {
    t.add_row([
        format!("5. load rate ({} events)", a.trace_events),
        format!("{:.2} M events/s", a.load_events_per_sec / 1e6),
        format!(
            "{:.1} s, peak RSS {:.0} MiB",
            a.load_wall_s, a.load_max_rss_mib
        ),
        ">= 2 M events/s".into(),
        verdict(a.load_events_per_sec >= 2e6).into(),
    ]);
    let e = &a.export;
    let size_ratio = e.parquet_bytes as f64 / e.column_file_bytes.max(1) as f64;
    t.add_row([
        format!("5. export to Parquet ({} rows)", e.rows),
        format!("{:.2} M rows/s", e.rows_per_sec / 1e6),
        format!(
            "{:.1} s, {:.1} bytes/event, {size_ratio:.2}x the column file, peak RSS {:.0} MiB",
            e.wall_s,
            e.parquet_bytes as f64 / a.trace_events.max(1) as f64,
            e.max_rss_mib
        ),
        ">= 5 M rows/s, <= 1.5x".into(),
        verdict(e.rows_per_sec >= 5e6 && size_ratio <= 1.5).into(),
    ]);
    let (query, tools): (Vec<_>, Vec<_>) = a
        .tool_latency_ms
        .iter()
        .partition(|(n, _)| n.as_str() == schedlens::mcp::query::QUERY.name);
    let worst = tools.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    t.add_row([
        "5. MCP analysis tool latency (worst median)".to_string(),
        format!("{worst:.0} ms"),
        tools
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        "< 500 ms each".into(),
        verdict(worst < 500.0).into(),
    ]);
    if let Some((_, ms)) = query.first() {
        t.add_row([
            "5. query tool: GROUP BY cpu over every slice".to_string(),
            format!("{ms:.0} ms"),
            "arbitrary SQL; a whole-table scan".into(),
            "-".into(),
            "".into(),
        ]);
    }
}

/// Figure 6 alone (`bench --context`).
pub fn print_context(c: &ContextFigure) {
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "schedlens", "baseline / perf", "target", ""]);
    context_rows(&mut t, c);
    println!("{t}");
}

/// Figure 6's rows: each recording's event rates and program costs.
fn context_rows(t: &mut comfy_table::Table, c: &ContextFigure) {
    for g in [&c.idle, &c.busy] {
        t.add_row([
            format!("6. events/s by type, {}", g.load),
            g.events_per_sec
                .iter()
                .map(|(n, r)| format!("{n} {r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            g.programs
                .iter()
                .filter(|p| p.runs > 0)
                .map(|p| format!("{} {:.0} ns", p.name, p.ns_per_run))
                .collect::<Vec<_>>()
                .join(", "),
            "-".into(),
            "".into(),
        ]);
    }
    let s = &c.symbolization;
    t.add_row([
        format!("6. symbolization after {} s of --stacks all", s.secs),
        format!(
            "{:.2} s, recorder peak RSS {:.0} MiB",
            s.symbolize_s, s.recorder_max_rss_mib
        ),
        s.summary.clone(),
        "< 5 s, < 256 MiB".into(),
        verdict(s.symbolize_s < 5.0 && s.recorder_max_rss_mib < 256.0).into(),
    ]);
}
