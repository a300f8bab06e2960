//! The linux.cpu.utilization.* modules: CPU utilization per period and in an
//! interval, and CPU cycles (time x frequency) per thread, process and CPU.
//!
//! The trace has no suspend periods, so the "awake" time of an interval is
//! all of it, as when Perfetto finds no suspend in a trace.

use super::{Body, Col, Module, Object};

const fn col(name: &'static str, ty: &'static str, doc: &'static str) -> Col {
    Col { name, ty, doc }
}

/// The utilization per period of `:interval` ns of the slices of `$source`
/// (a subquery with ts and ts_end): each slice counts in the period it
/// starts in, up to that period's end, as in Perfetto; periods are
/// multiples of the interval from the one holding TRACE_START() to the one
/// holding TRACE_END(), and only those with slices have a row.
macro_rules! per_period {
    ($source:literal) => {
        concat!(
            "SELECT part, sum(min(ts_end, part + :interval) - ts) \
               / (CAST(:interval AS REAL) * (SELECT max(cpu) + 1 FROM sched)), \
             sum(min(ts_end, part + :interval) - ts) / CAST(:interval AS REAL) \
             FROM (SELECT ts, ts_end, ts / :interval * :interval AS part FROM (",
            $source,
            ")) WHERE :interval > 0 \
               AND part BETWEEN trace_start() / :interval * :interval \
                            AND trace_end() / :interval * :interval \
             GROUP BY part ORDER BY part"
        )
    };
}

/// The part of each row of `_cpu_freq_per_thread` inside [:ts, :ts + :dur),
/// with its columns: `clip` (id, ts, dur, ucpu, cpu, utid, freq).
macro_rules! clipped_pieces {
    () => {
        "clip AS (SELECT id, max(ts, :ts) AS ts, min(ts + dur, :ts + :dur) - max(ts, :ts) AS dur, \
                         ucpu, cpu, utid, freq \
                  FROM _cpu_freq_per_thread WHERE ts < :ts + :dur AND ts + dur > :ts)"
    };
}

/// Cycles and frequency statistics over `clip`-like rows (dur, freq):
/// millicycles, megacycles, runtime, min_freq, max_freq, avg_freq (pieces of
/// unknown frequency count in runtime only).
macro_rules! cycles {
    () => {
        "CAST(sum(dur * freq / 1000) AS INTEGER), CAST(sum(dur * freq / 1000) / 1e9 AS INTEGER), \
         sum(dur), min(freq), max(freq), \
         CAST(sum(dur * freq / 1000) / (sum(CASE WHEN freq IS NOT NULL THEN dur END) / 1000) AS INTEGER)"
    };
}

const UTILIZATION_COLUMNS: &[Col] = &[
    col("ts", "INTEGER", "Start of the period, ns."),
    col(
        "utilization",
        "REAL",
        "Busy time over the period's time on all CPUs, in [0, 1].",
    ),
    col(
        "unnormalized_utilization",
        "REAL",
        "Busy time over the period, in [0, number of CPUs].",
    ),
];

const CYCLES_COLUMNS: [Col; 6] = [
    col(
        "millicycles",
        "INTEGER",
        "Sum of dur x frequency, in thousandths of a cycle (ns x kHz).",
    ),
    col("megacycles", "INTEGER", "The same in millions of cycles."),
    col("runtime", "INTEGER", "Time running, ns."),
    col(
        "min_freq",
        "INTEGER",
        "Lowest CPU frequency while running, kHz.",
    ),
    col(
        "max_freq",
        "INTEGER",
        "Highest CPU frequency while running, kHz.",
    ),
    col(
        "avg_freq",
        "INTEGER",
        "Average CPU frequency while running, kHz (weighted by time).",
    ),
];

const INTERVAL_ARGS: &[Col] = &[
    col("ts", "INTEGER", "Start of the interval, ns."),
    col("dur", "INTEGER", "Length of the interval, ns."),
];

pub static UTILIZATION_GENERAL: Module = Module {
    name: "linux.cpu.utilization.general",
    includes: &[],
    objects: &[Object {
        name: "_cpu_freq_per_thread",
        doc: "The running slices of non-idle threads cut where their CPU's frequency changes.",
        columns: &[
            col("id", "INTEGER", "Row number."),
            col("ts", "INTEGER", "Start of the piece, ns."),
            col("dur", "INTEGER", "Length of the piece, ns."),
            col("ucpu", "INTEGER", "The CPU (cpu.id)."),
            col("cpu", "INTEGER", "The CPU number."),
            col("utid", "INTEGER", "The thread."),
            col("freq", "INTEGER", "The CPU's frequency, kHz; NULL before its first cpufreq sample."),
        ],
        // Each slice is cut at the frequency samples inside it; each piece
        // takes the latest sample at or before its start. Lookups go through
        // the (track_id, ts) index of counter.
        body: Body::View(
            "WITH s AS (
               SELECT sched.ts, sched.ts + sched.dur AS ts_end, sched.cpu, sched.utid, t.id AS track
               FROM sched LEFT JOIN counter_track AS t ON t.name = 'cpufreq' AND t.cpu = sched.cpu
               WHERE sched.dur > 0 AND sched.utid NOT IN (SELECT utid FROM thread WHERE is_idle)),
             starts AS (
               SELECT ts, ts_end, cpu, utid, track FROM s
               UNION ALL
               SELECT c.ts, s.ts_end, s.cpu, s.utid, s.track
               FROM s JOIN counter AS c ON c.track_id = s.track AND c.ts > s.ts AND c.ts < s.ts_end),
             pieces AS (
               SELECT ts, cpu, utid,
                 coalesce((SELECT min(c.ts) FROM counter AS c
                           WHERE c.track_id = track AND c.ts > starts.ts AND c.ts < ts_end), ts_end)
                   - ts AS dur,
                 (SELECT CAST(c.value AS INTEGER) FROM counter AS c
                  WHERE c.track_id = track AND c.ts <= starts.ts ORDER BY c.ts DESC LIMIT 1) AS freq
               FROM starts)
             SELECT row_number() OVER (ORDER BY ts, cpu) - 1, ts, dur, cpu, cpu, utid, freq
             FROM pieces",
        ),
    }],
};

pub static UTILIZATION_THREAD_CPU: Module = Module {
    name: "linux.cpu.utilization.thread_cpu",
    includes: &["linux.cpu.utilization.general"],
    objects: &[
        Object {
            name: "cpu_cycles_per_thread_per_cpu",
            doc: "CPU cycles and frequency statistics of each thread on each CPU (needs cpu_frequency events).",
            columns: &[
                col("utid", "INTEGER", "The thread."),
                col("ucpu", "INTEGER", "The CPU (cpu.id)."),
                col("cpu", "INTEGER", "The CPU number."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::View(concat!(
                "SELECT utid, ucpu, cpu, ",
                cycles!(),
                " FROM _cpu_freq_per_thread GROUP BY utid, ucpu"
            )),
        },
        Object {
            name: "cpu_cycles_per_thread_per_cpu_in_interval",
            doc: "cpu_cycles_per_thread_per_cpu counting only the time inside an interval.",
            columns: &[
                col("utid", "INTEGER", "The thread."),
                col("ucpu", "INTEGER", "The CPU (cpu.id)."),
                col("cpu", "INTEGER", "The CPU number."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "WITH ",
                    clipped_pieces!(),
                    " SELECT utid, ucpu, cpu, ",
                    cycles!(),
                    " FROM clip GROUP BY utid, ucpu"
                ),
            },
        },
    ],
};

/// Utilization in an interval from `$awake` (busy ns in the interval):
/// awake_dur, then the percentages over the interval, normalized by the
/// number of CPUs and not, rounded to `$digits` decimals.
macro_rules! utilization_in_interval {
    ($awake:literal, $digits:literal) => {
        concat!(
            $awake,
            ", round(",
            $awake,
            " * 100.0 / :dur / (SELECT max(cpu) + 1 FROM cpu), ",
            $digits,
            "), ",
            "round(",
            $awake,
            " * 100.0 / :dur, ",
            $digits,
            ")"
        )
    };
}

const AWAKE_COLUMNS: [Col; 3] = [
    col(
        "awake_dur",
        "INTEGER",
        "Running time inside the interval, ns.",
    ),
    col(
        "awake_utilization",
        "REAL",
        "awake_dur as a percentage of the interval on all CPUs, in [0, 100].",
    ),
    col(
        "awake_unnormalized_utilization",
        "REAL",
        "awake_dur as a percentage of the interval, in [0, 100 x number of CPUs].",
    ),
];

pub static UTILIZATION_SYSTEM: Module = Module {
    name: "linux.cpu.utilization.system",
    includes: &[
        "linux.cpu.utilization.general",
        "linux.cpu.utilization.thread_cpu",
    ],
    objects: &[
        Object {
            name: "cpu_utilization_per_period",
            doc: "Utilization of all CPUs (busy with a non-idle thread) per period of a given length.",
            columns: UTILIZATION_COLUMNS,
            body: Body::TableFunction {
                args: &[col("interval", "INTEGER", "Length of a period, ns.")],
                sql: per_period!(
                    "SELECT ts, ts_end FROM sched WHERE utid NOT IN (SELECT utid FROM thread WHERE is_idle)"
                ),
            },
        },
        Object {
            name: "cpu_utilization_per_second",
            doc: "cpu_utilization_per_period for periods of one second.",
            columns: UTILIZATION_COLUMNS,
            body: Body::View(
                "SELECT ts, utilization, unnormalized_utilization FROM cpu_utilization_per_period(1000000000)",
            ),
        },
        Object {
            name: "cpu_cycles",
            doc: "CPU cycles and frequency statistics of the whole trace: one row.",
            columns: &CYCLES_COLUMNS,
            body: Body::View(
                "SELECT CAST(sum(millicycles) AS INTEGER), CAST(sum(millicycles) / 1e9 AS INTEGER),
                        sum(runtime), min(min_freq), max(max_freq),
                        CAST(sum(millicycles) / (sum(runtime) / 1000) AS INTEGER)
                 FROM cpu_cycles_per_thread_per_cpu",
            ),
        },
        Object {
            name: "cpu_cycles_in_interval",
            doc: "CPU cycles and frequency statistics inside an interval: one row.",
            columns: &[
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                col(
                    "awake_runtime",
                    "INTEGER",
                    "Running time inside the interval, ns.",
                ),
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "WITH ",
                    clipped_pieces!(),
                    " SELECT CAST(sum(dur * freq / 1000) AS INTEGER), \
                       CAST(sum(dur * freq / 1000) / 1e9 AS INTEGER), sum(dur), sum(dur), \
                       min(freq), max(freq), CAST(sum(dur * freq / 1000) \
                       / (sum(CASE WHEN freq IS NOT NULL THEN dur END) / 1000) AS INTEGER) FROM clip"
                ),
            },
        },
        Object {
            name: "cpu_utilization_in_interval",
            doc: "Utilization of all CPUs inside an interval: one row.",
            columns: &AWAKE_COLUMNS,
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "SELECT ",
                    utilization_in_interval!("awake_runtime", "2"),
                    " FROM cpu_cycles_in_interval(:ts, :dur)"
                ),
            },
        },
        Object {
            name: "cpu_cycles_per_cpu",
            doc: "CPU cycles and frequency statistics of each CPU.",
            columns: &[
                col("ucpu", "INTEGER", "The CPU (cpu.id)."),
                col("cpu", "INTEGER", "The CPU number."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::View(
                "SELECT ucpu, cpu, CAST(sum(millicycles) AS INTEGER),
                        CAST(sum(millicycles) / 1e9 AS INTEGER), sum(runtime), min(min_freq),
                        max(max_freq), CAST(sum(millicycles) / (sum(runtime) / 1000) AS INTEGER)
                 FROM cpu_cycles_per_thread_per_cpu GROUP BY ucpu, cpu",
            ),
        },
        Object {
            name: "cpu_cycles_per_cpu_in_interval",
            doc: "cpu_cycles_per_cpu counting only the time inside an interval.",
            columns: &[
                col("ucpu", "INTEGER", "The CPU (cpu.id)."),
                col("cpu", "INTEGER", "The CPU number."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "WITH ",
                    clipped_pieces!(),
                    " SELECT ucpu, cpu, ",
                    cycles!(),
                    " FROM clip GROUP BY ucpu"
                ),
            },
        },
    ],
};

pub static UTILIZATION_PROCESS: Module = Module {
    name: "linux.cpu.utilization.process",
    includes: &[
        "linux.cpu.utilization.general",
        "linux.cpu.utilization.thread_cpu",
        "time.conversion",
    ],
    objects: &[
        Object {
            name: "cpu_process_utilization_per_period",
            doc: "Utilization of all CPUs by one process (its non-idle threads) per period of a given length.",
            columns: UTILIZATION_COLUMNS,
            body: Body::TableFunction {
                args: &[
                    col("interval", "INTEGER", "Length of a period, ns."),
                    col("upid", "INTEGER", "The process (process.upid)."),
                ],
                sql: per_period!(
                    "SELECT sched.ts, sched.ts_end FROM sched JOIN thread USING (utid) \
                     WHERE thread.upid = :upid AND NOT thread.is_idle"
                ),
            },
        },
        Object {
            name: "cpu_process_utilization_per_second",
            doc: "cpu_process_utilization_per_period for periods of one second.",
            columns: UTILIZATION_COLUMNS,
            body: Body::TableFunction {
                args: &[col("upid", "INTEGER", "The process (process.upid).")],
                sql: "SELECT ts, utilization, unnormalized_utilization \
                      FROM cpu_process_utilization_per_period(1000000000, :upid)",
            },
        },
        Object {
            name: "cpu_cycles_per_process",
            doc: "CPU cycles and frequency statistics of each process.",
            columns: &[
                col("upid", "INTEGER", "The process."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::View(
                "SELECT upid, CAST(sum(millicycles) AS INTEGER),
                        CAST(sum(millicycles) / 1e9 AS INTEGER), sum(runtime), min(min_freq),
                        max(max_freq), CAST(sum(millicycles) / (sum(runtime) / 1000) AS INTEGER)
                 FROM cpu_cycles_per_thread_per_cpu JOIN thread USING (utid)
                 WHERE upid IS NOT NULL GROUP BY upid",
            ),
        },
        Object {
            name: "cpu_cycles_per_process_in_interval",
            doc: "cpu_cycles_per_process counting only the time inside an interval.",
            columns: &[
                col("upid", "INTEGER", "The process."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                col(
                    "awake_runtime",
                    "INTEGER",
                    "Running time inside the interval, ns.",
                ),
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "WITH ",
                    clipped_pieces!(),
                    " SELECT upid, CAST(sum(dur * freq / 1000) AS INTEGER), \
                       CAST(sum(dur * freq / 1000) / 1e9 AS INTEGER), sum(dur), sum(dur), \
                       min(freq), max(freq), CAST(sum(dur * freq / 1000) \
                       / (sum(CASE WHEN freq IS NOT NULL THEN dur END) / 1000) AS INTEGER) \
                     FROM clip JOIN thread USING (utid) GROUP BY upid"
                ),
            },
        },
        Object {
            name: "cpu_process_utilization_in_interval",
            doc: "Utilization of the CPUs by each process inside an interval.",
            columns: &[
                col("upid", "INTEGER", "The process."),
                col("process_name", "TEXT", "Its name."),
                AWAKE_COLUMNS[0],
                AWAKE_COLUMNS[1],
                AWAKE_COLUMNS[2],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "SELECT upid, process.name, ",
                    utilization_in_interval!("sum(awake_runtime)", "6"),
                    " FROM cpu_cycles_per_process_in_interval(:ts, :dur) JOIN process USING (upid) \
                     GROUP BY upid"
                ),
            },
        },
    ],
};

pub static UTILIZATION_THREAD: Module = Module {
    name: "linux.cpu.utilization.thread",
    includes: &[
        "linux.cpu.utilization.general",
        "linux.cpu.utilization.thread_cpu",
        "time.conversion",
    ],
    objects: &[
        Object {
            name: "cpu_thread_utilization_per_period",
            doc: "Utilization of all CPUs by one thread per period of a given length.",
            columns: UTILIZATION_COLUMNS,
            body: Body::TableFunction {
                args: &[
                    col("interval", "INTEGER", "Length of a period, ns."),
                    col("utid", "INTEGER", "The thread (thread.utid)."),
                ],
                sql: per_period!("SELECT ts, ts_end FROM sched WHERE utid = :utid"),
            },
        },
        Object {
            name: "cpu_thread_utilization_per_second",
            doc: "cpu_thread_utilization_per_period for periods of one second.",
            columns: UTILIZATION_COLUMNS,
            body: Body::TableFunction {
                args: &[col("utid", "INTEGER", "The thread (thread.utid).")],
                sql: "SELECT ts, utilization, unnormalized_utilization \
                      FROM cpu_thread_utilization_per_period(1000000000, :utid)",
            },
        },
        Object {
            name: "cpu_cycles_per_thread",
            doc: "CPU cycles and frequency statistics of each thread.",
            columns: &[
                col("utid", "INTEGER", "The thread."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::View(
                "SELECT utid, CAST(sum(millicycles) AS INTEGER),
                        CAST(sum(millicycles) / 1e9 AS INTEGER), sum(runtime), min(min_freq),
                        max(max_freq), CAST(sum(millicycles) / (sum(runtime) / 1000) AS INTEGER)
                 FROM cpu_cycles_per_thread_per_cpu GROUP BY utid",
            ),
        },
        Object {
            name: "cpu_cycles_per_thread_in_interval",
            doc: "cpu_cycles_per_thread counting only the time inside an interval.",
            columns: &[
                col("utid", "INTEGER", "The thread."),
                CYCLES_COLUMNS[0],
                CYCLES_COLUMNS[1],
                CYCLES_COLUMNS[2],
                col(
                    "awake_runtime",
                    "INTEGER",
                    "Running time inside the interval, ns.",
                ),
                CYCLES_COLUMNS[3],
                CYCLES_COLUMNS[4],
                CYCLES_COLUMNS[5],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "WITH ",
                    clipped_pieces!(),
                    " SELECT utid, CAST(sum(dur * freq / 1000) AS INTEGER), \
                       CAST(sum(dur * freq / 1000) / 1e9 AS INTEGER), sum(dur), sum(dur), \
                       min(freq), max(freq), CAST(sum(dur * freq / 1000) \
                       / (sum(CASE WHEN freq IS NOT NULL THEN dur END) / 1000) AS INTEGER) \
                     FROM clip GROUP BY utid"
                ),
            },
        },
        Object {
            name: "cpu_thread_utilization_in_interval",
            doc: "Utilization of the CPUs by each thread inside an interval.",
            columns: &[
                col("upid", "INTEGER", "Its process."),
                col("utid", "INTEGER", "The thread."),
                col("thread_name", "TEXT", "Its name."),
                AWAKE_COLUMNS[0],
                AWAKE_COLUMNS[1],
                AWAKE_COLUMNS[2],
            ],
            body: Body::TableFunction {
                args: INTERVAL_ARGS,
                sql: concat!(
                    "SELECT upid, utid, thread.name, ",
                    utilization_in_interval!("sum(awake_runtime)", "6"),
                    " FROM cpu_cycles_per_thread_in_interval(:ts, :dur) JOIN thread USING (utid) \
                     GROUP BY utid"
                ),
            },
        },
    ],
};
