//! What the trace says about itself and the machine it was recorded on:
//! metadata, the CPUs and their topology, lost events, and what the
//! trackers need to interpret events (the kernel version, when tracing
//! started). It comes from packets that describe the whole trace, so it
//! takes effect at tokenization, as in trace_processor.

use crate::analyzer::stats::{Stat, Stats};
use crate::analyzer::tables::{CpuRow, LostEventsRow};
use crate::perfetto::proto::CpuInfo;
use crate::perfetto::proto::schedlens::{RecorderStats, Topology};
use std::collections::BTreeMap;

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Meta {
    Int(i64),
    Str(String),
}

#[derive(Debug, Default)]
pub struct TraceInfo {
    /// The metadata table's rows.
    pub meta: BTreeMap<String, Meta>,
    /// (major, minor) of the traced kernel, which decides how sched_switch
    /// prev_state decodes.
    pub kernel_version: Option<(u32, u32)>,
    /// When the tracing service says tracing started: ftrace events before
    /// it are dropped.
    pub tracing_started: Option<i64>,
    /// Latest first-bundle previous_bundle_end_timestamp over CPUs: ftrace
    /// events before it only get ftrace_event rows.
    pub latest_data_start: Option<i64>,
    /// The cpu table's rows, by CPU.
    pub cpus: BTreeMap<u32, CpuRow>,
    /// The lost_events table's rows, in file order.
    pub lost: Vec<LostEventsRow>,
}

impl TraceInfo {
    pub fn set_int(&mut self, k: &str, v: i64) {
        self.meta.insert(k.to_string(), Meta::Int(v));
    }

    pub fn set_str(&mut self, k: &str, v: &str) {
        self.meta.insert(k.to_string(), Meta::Str(v.to_string()));
    }

    /// The row of `cpu`, created empty on first sight.
    pub fn cpu(&mut self, cpu: u32) -> &mut CpuRow {
        self.cpus.entry(cpu).or_insert_with(|| CpuRow {
            cpu,
            ..CpuRow::default()
        })
    }

    /// CpuInfo: processor names, capacities, and clusters by capacity (if every
    /// CPU has one) or else by max frequency, as trace_processor assigns them.
    pub fn cpu_info(&mut self, info: CpuInfo) {
        let keys: Vec<Option<u32>> = if info.cpus.iter().all(|c| c.capacity.is_some()) {
            info.cpus.iter().map(|c| c.capacity).collect()
        } else if info.cpus.iter().all(|c| !c.frequencies.is_empty()) {
            info.cpus
                .iter()
                .map(|c| c.frequencies.iter().max().copied())
                .collect()
        } else {
            vec![None; info.cpus.len()]
        };
        let clusters = clusters(&keys);
        for (i, c) in info.cpus.iter().enumerate() {
            let row = self.cpu(i as u32);
            if let Some(p) = c.processor.as_deref().filter(|p| !p.is_empty()) {
                row.processor = Some(p.to_string());
            }
            row.cluster_id = Some(clusters[i].unwrap_or(0));
            if c.capacity.is_some() {
                row.capacity = c.capacity;
            }
            if let Some(&f) = c.frequencies.iter().max() {
                row.max_freq_khz = Some(f);
            }
        }
    }

    /// schedlens Topology: the recording machine's CPUs.
    pub fn topology(&mut self, t: Topology) {
        if let Some(h) = t.hostname.as_deref().filter(|h| !h.is_empty()) {
            self.set_str("host_name", h);
        }
        if let Some(driver) = &t.cpufreq_driver {
            self.set_str("cpufreq_driver", driver);
        }
        let have_clusters = self.cpus.values().any(|c| c.cluster_id.is_some());
        let keys: Vec<Option<u32>> = if t.cpus.iter().all(|c| c.capacity.is_some()) {
            t.cpus.iter().map(|c| c.capacity).collect()
        } else if t.cpus.iter().all(|c| c.max_freq_khz.is_some()) {
            t.cpus.iter().map(|c| c.max_freq_khz).collect()
        } else {
            vec![None; t.cpus.len()]
        };
        let clusters = clusters(&keys);
        for (c, cluster) in t.cpus.iter().zip(clusters) {
            let row = self.cpu(c.cpu());
            row.package_id = c.package_id;
            row.core_id = c.core_id;
            row.llc_id = c.llc_id;
            row.numa_node = c.numa_node;
            row.shard = c.shard;
            if c.capacity.is_some() {
                row.capacity = c.capacity;
            }
            if c.max_freq_khz.is_some() {
                row.max_freq_khz = c.max_freq_khz;
            }
            if !have_clusters {
                row.cluster_id = cluster;
            }
        }
    }

    /// schedlens RecorderStats: how the recording went.
    pub fn recorder_stats(&mut self, r: RecorderStats, stats: &mut Stats) {
        if let Some(v) = &r.version {
            self.set_str("recorder_version", v);
        }
        if !r.argv.is_empty() {
            self.set_str("recorder_argv", &r.argv.join(" "));
        }
        if let Some(v) = r.start_ts {
            self.set_int("recorder_start_ts", v as i64);
        }
        if let Some(v) = r.end_ts {
            self.set_int("recorder_end_ts", v as i64);
        }
        if let Some(v) = r.bytes_written {
            self.set_int("recorder_bytes_written", v as i64);
        }
        for c in &r.events {
            self.set_int(&format!("recorder_events_{}", c.name()), c.value() as i64);
        }
        for (cpu, &n) in r.lost_per_cpu.iter().enumerate() {
            stats.set_at(Stat::recorder_lost_events_total, cpu as u32, n as i64);
        }
        // Older recorders did not count them: no row rather than a false 0.
        if !r.recursion_misses.is_empty() {
            let skipped: u64 = r.recursion_misses.iter().map(|c| c.value()).sum();
            stats.add(Stat::recorder_bpf_recursion_misses, skipped as i64);
        }
        if let Some(st) = &r.stacks {
            let taken: u64 = st.taken.iter().map(|c| c.value()).sum();
            for (stat, v) in [
                (Stat::recorder_stacks_taken, taken),
                (Stat::recorder_stacks_reused, st.reused()),
                (Stat::recorder_stacks_lost_map_full, st.lost_map_full()),
                (Stat::recorder_stacks_lost_collision, st.lost_collision()),
                (
                    Stat::recorder_stacks_lost_no_user_stack,
                    st.lost_no_user_stack(),
                ),
                (Stat::recorder_stacks_lost_ring_full, st.lost_ring_full()),
                (Stat::recorder_stacks_unreadable, st.unreadable()),
                (Stat::recorder_stack_frames, st.frames()),
                (Stat::recorder_stack_frames_named, st.frames_named()),
                (Stat::recorder_user_stacks, st.user_stacks()),
                (
                    Stat::recorder_user_stacks_process_gone,
                    st.user_stacks_gone(),
                ),
                (Stat::recorder_stacks_symbolize_ns, st.symbolize_ns()),
            ] {
                stats.add(stat, v.min(i64::MAX as u64) as i64);
            }
        }
        // The fullest ring, in percent: how close the recording came to
        // dropping events.
        let peak = r
            .ring_fill
            .iter()
            .filter(|f| f.size() > 0)
            .map(|f| (f.peak() as f64 * 100.0 / f.size() as f64).ceil() as i64)
            .max();
        if let Some(pct) = peak {
            self.set_int("recorder_ring_peak_fill_pct", pct);
        }
    }
}

/// Equal keys share a cluster; clusters are numbered from the smallest key.
fn clusters(keys: &[Option<u32>]) -> Vec<Option<u32>> {
    let mut distinct: Vec<u32> = keys.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    keys.iter()
        .map(|k| k.map(|k| distinct.binary_search(&k).unwrap_or(0) as u32))
        .collect()
}
