//! The sched.* modules: runnable and latency, state names, time in state,
//! thread-level parallelism.

use rusqlite::types::{Value, ValueRef};

use super::{Body, Col, Module, Object};

const fn col(name: &'static str, ty: &'static str, doc: &'static str) -> Col {
    Col { name, ty, doc }
}

/// How many intervals of `$source` (a subquery with ts and dur) are open
/// from each timestamp at which one starts or ends until the next: +1 at
/// each start, -1 at each end (intervals with dur -1 never end), summed in
/// time order, one row per distinct timestamp.
macro_rules! open_count {
    ($source:literal) => {
        concat!(
            "WITH src AS (",
            $source,
            "), edges(ts, delta) AS (SELECT ts, 1 FROM src UNION ALL \
             SELECT ts + dur, -1 FROM src WHERE dur <> -1), \
             per_ts AS (SELECT ts, sum(delta) AS delta FROM edges GROUP BY ts) \
             SELECT ts, sum(delta) OVER (ORDER BY ts ROWS UNBOUNDED PRECEDING) FROM per_ts ORDER BY ts"
        )
    };
}

/// The part of each row of `$rows` (id, ts, dur, with dur > 0) inside the
/// interval [:ts, :ts + :dur): as `clip` (id, ts, dur), only rows that
/// overlap it.
macro_rules! clipped_to_interval {
    ($rows:literal) => {
        concat!(
            "clip AS (SELECT id, max(ts, :ts) AS ts, min(ts + dur, :ts + :dur) - max(ts, :ts) AS dur \
             FROM (",
            $rows,
            ") WHERE ts < :ts + :dur AND ts + dur > :ts)"
        )
    };
}

pub static RUNNABLE: Module = Module {
    name: "sched.runnable",
    includes: &[],
    objects: &[Object {
        name: "sched_previous_runnable_on_thread",
        doc: "For each Running thread_state row, the runnable states of the same thread before it.",
        columns: &[
            col("id", "INTEGER", "thread_state.id of the Running state."),
            col(
                "prev_runnable_id",
                "INTEGER",
                "thread_state.id of the latest R or R+ state of the thread before it.",
            ),
            col(
                "prev_wakeup_runnable_id",
                "INTEGER",
                "thread_state.id of the latest R state before it that a thread woke (waker_utid set), \
                 not from interrupt context.",
            ),
        ],
        // Among the thread's R, R+ and Running states of known length, in id
        // (time) order: the largest earlier id of each kind.
        body: Body::View(
            "SELECT id, prev_runnable_id, prev_wakeup_runnable_id FROM (
               SELECT id, state,
                 max(CASE WHEN state <> 'Running' THEN id END) OVER w AS prev_runnable_id,
                 max(CASE WHEN waker_utid IS NOT NULL AND irq_context IS NOT 1 THEN id END) OVER w
                   AS prev_wakeup_runnable_id
               FROM thread_state
               WHERE state IN ('R', 'R+', 'Running') AND dur <> -1
               WINDOW w AS (PARTITION BY utid ORDER BY id ROWS UNBOUNDED PRECEDING))
             WHERE state = 'Running'
             ORDER BY id",
        ),
    }],
};

pub static LATENCY: Module = Module {
    name: "sched.latency",
    includes: &["sched.runnable"],
    objects: &[Object {
        name: "sched_latency_for_running_interval",
        doc: "Scheduling latency of each Running interval: how long the thread was runnable just before.",
        columns: &[
            col(
                "thread_state_id",
                "INTEGER",
                "thread_state.id of the Running state.",
            ),
            col("sched_id", "INTEGER", "sched.id of the same interval."),
            col("utid", "INTEGER", "The thread (thread.utid)."),
            col(
                "runnable_latency_id",
                "INTEGER",
                "thread_state.id of the runnable state before it (its dur is latency_dur).",
            ),
            col(
                "latency_dur",
                "INTEGER",
                "Scheduling latency, ns: the runnable state's duration.",
            ),
        ],
        // CROSS JOIN keeps this order (SQLite's planner may otherwise scan
        // sched for every running state): each step is a lookup by id, then
        // the slice by its ts.
        body: Body::View(
            "SELECT r.id, s.id, runnable.utid, r.prev_runnable_id, runnable.dur
             FROM sched_previous_runnable_on_thread AS r
             CROSS JOIN thread_state AS runnable ON runnable.id = r.prev_runnable_id
             CROSS JOIN thread_state AS running ON running.id = r.id
             CROSS JOIN sched AS s
               ON s.ts = running.ts AND s.utid = running.utid AND s.dur = running.dur",
        ),
    }],
};

/// Perfetto's names of the thread_state codes.
fn human_state(code: &str) -> Option<&'static str> {
    Some(match code {
        "Running" => "Running",
        "R" => "Runnable",
        "R+" => "Runnable (Preempted)",
        "S" => "Sleeping",
        "D" => "Uninterruptible Sleep",
        "T" => "Stopped",
        "t" => "Traced",
        "X" => "Exit (Dead)",
        "Z" => "Exit (Zombie)",
        "x" => "Task Dead",
        "I" => "Idle",
        "K" => "Wakekill",
        "W" => "Waking",
        "P" => "Parked",
        "N" => "No Load",
        _ => return None,
    })
}

/// The state's name, or the argument itself when it has none.
fn state_name(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            Value::Text(human_state(&s).map_or_else(|| s.into_owned(), String::from))
        }
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Null => Value::Null,
    }
}

pub static STATES: Module = Module {
    name: "sched.states",
    includes: &[],
    objects: &[
        Object {
            name: "sched_state_to_human_readable_string",
            doc: "The name of a thread_state code: 'S' -> 'Sleeping', 'R+' -> 'Runnable (Preempted)', ...",
            columns: &[],
            body: Body::Scalar {
                args: &[col("short_name", "TEXT", "A thread_state.state code.")],
                returns: "TEXT (the code itself when it has no name)",
                func: |ctx| Ok(state_name(ctx.get_raw(0))),
            },
        },
        Object {
            name: "sched_state_io_to_human_readable_string",
            doc: "The state's name with ' (IO)' or ' (non-IO)' when io_wait is 1 or 0.",
            columns: &[],
            body: Body::Scalar {
                args: &[
                    col("sched_state", "TEXT", "A thread_state.state code."),
                    col("io_wait", "INTEGER", "thread_state.io_wait: 1, 0 or NULL."),
                ],
                returns: "TEXT",
                func: |ctx| {
                    let name = match state_name(ctx.get_raw(0)) {
                        Value::Text(s) => s,
                        Value::Integer(i) => i.to_string(),
                        Value::Real(r) => r.to_string(),
                        _ => String::new(),
                    };
                    let io = match ctx.get_raw(1) {
                        ValueRef::Integer(1) => " (IO)",
                        ValueRef::Integer(0) => " (non-IO)",
                        _ => "",
                    };
                    Ok(Value::Text(format!("{name}{io}")))
                },
            },
        },
    ],
};

pub static TIME_IN_STATE: Module = Module {
    name: "sched.time_in_state",
    includes: &[],
    objects: &[
        Object {
            name: "sched_time_in_state_for_thread",
            doc: "Time each thread spent in each scheduling state over the trace.",
            columns: &[
                col("utid", "INTEGER", "The thread (thread.utid)."),
                col(
                    "total_runtime",
                    "INTEGER",
                    "Sum of the dur of all its thread_state rows, ns.",
                ),
                col("state", "TEXT", "A thread_state.state code."),
                col(
                    "time_in_state",
                    "INTEGER",
                    "Sum of the dur of its rows in this state, ns.",
                ),
                col(
                    "percentage_in_state",
                    "INTEGER",
                    "time_in_state * 100 / total_runtime, rounded down.",
                ),
            ],
            // As Perfetto's: the sums take each row's dur as it is (-1 for a
            // state lasting to the end of the trace).
            body: Body::View(
                "SELECT per_state.utid, total.total, per_state.state, per_state.time,
                        per_state.time * 100 / total.total
                 FROM (SELECT utid, state, sum(dur) AS time FROM thread_state GROUP BY utid, state)
                   AS per_state
                 JOIN (SELECT utid, sum(dur) AS total FROM thread_state GROUP BY utid) AS total
                   USING (utid)",
            ),
        },
        Object {
            name: "sched_percentage_of_time_in_state",
            doc: "Per thread, the percentage ([0, 100], rounded down) of its time in the main states.",
            columns: &[
                col("utid", "INTEGER", "The thread (thread.utid)."),
                col("running", "INTEGER", "Percentage of time Running."),
                col("runnable", "INTEGER", "Percentage of time runnable (R)."),
                col(
                    "runnable_preempted",
                    "INTEGER",
                    "Percentage of time preempted runnable (R+).",
                ),
                col("sleeping", "INTEGER", "Percentage of time sleeping (S)."),
                col(
                    "uninterruptible_sleep",
                    "INTEGER",
                    "Percentage of time in uninterruptible sleep (D).",
                ),
                col(
                    "other",
                    "INTEGER",
                    "Percentage of time in T, t, X, Z, x, I, K, W, P or N, from their summed time.",
                ),
            ],
            body: Body::View(
                "SELECT utid,
                   max(CASE WHEN state = 'Running' THEN percentage_in_state END),
                   max(CASE WHEN state = 'R' THEN percentage_in_state END),
                   max(CASE WHEN state = 'R+' THEN percentage_in_state END),
                   max(CASE WHEN state = 'S' THEN percentage_in_state END),
                   max(CASE WHEN state = 'D' THEN percentage_in_state END),
                   sum(CASE WHEN state IN ('T', 't', 'X', 'Z', 'x', 'I', 'K', 'W', 'P', 'N')
                       THEN time_in_state END) * 100 / total_runtime
                 FROM sched_time_in_state_for_thread
                 GROUP BY utid",
            ),
        },
        Object {
            name: "sched_time_in_state_for_thread_in_interval",
            doc: "Time one thread spent in each state inside an interval, longest first.",
            columns: &[
                col("state", "TEXT", "A thread_state.state code."),
                col("io_wait", "INTEGER", "thread_state.io_wait of those rows."),
                col(
                    "blocked_function",
                    "TEXT",
                    "thread_state.blocked_function of those rows.",
                ),
                col(
                    "dur",
                    "INTEGER",
                    "Time in the interval with these state, io_wait and blocked_function, ns.",
                ),
            ],
            body: Body::TableFunction {
                args: &[
                    col("ts", "INTEGER", "Start of the interval, ns."),
                    col("dur", "INTEGER", "Length of the interval, ns."),
                    col("utid", "INTEGER", "The thread (thread.utid)."),
                ],
                sql: concat!(
                    "WITH ",
                    clipped_to_interval!(
                        "SELECT id, ts, dur FROM thread_state WHERE utid = :utid AND dur > 0"
                    ),
                    " SELECT t.state, t.io_wait, t.blocked_function, sum(clip.dur)
                      FROM clip JOIN thread_state AS t USING (id)
                      GROUP BY 1, 2, 3 ORDER BY 4 DESC"
                ),
            },
        },
        Object {
            name: "sched_time_in_state_and_cpu_for_thread_in_interval",
            doc: "Time one thread spent in each state on each CPU inside an interval, longest first.",
            columns: &[
                col("state", "TEXT", "A thread_state.state code."),
                col("io_wait", "INTEGER", "thread_state.io_wait of those rows."),
                col("cpu", "INTEGER", "thread_state.cpu of those rows."),
                col(
                    "blocked_function",
                    "TEXT",
                    "thread_state.blocked_function of those rows.",
                ),
                col(
                    "dur",
                    "INTEGER",
                    "Time in the interval with these values, ns.",
                ),
            ],
            body: Body::TableFunction {
                args: &[
                    col("ts", "INTEGER", "Start of the interval, ns."),
                    col("dur", "INTEGER", "Length of the interval, ns."),
                    col("utid", "INTEGER", "The thread (thread.utid)."),
                ],
                sql: concat!(
                    "WITH ",
                    clipped_to_interval!(
                        "SELECT id, ts, dur FROM thread_state WHERE utid = :utid AND dur > 0"
                    ),
                    " SELECT t.state, t.io_wait, t.cpu, t.blocked_function, sum(clip.dur)
                      FROM clip JOIN thread_state AS t USING (id)
                      GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC"
                ),
            },
        },
        Object {
            name: "sched_time_in_state_for_cpu_in_interval",
            doc: "Time the slices of one CPU spent inside an interval, by the state their threads ended in.",
            columns: &[
                col("end_state", "TEXT", "sched.end_state of those slices."),
                col("dur", "INTEGER", "Their time inside the interval, ns."),
            ],
            body: Body::TableFunction {
                args: &[
                    col("cpu", "INTEGER", "The CPU."),
                    col("ts", "INTEGER", "Start of the interval, ns."),
                    col("dur", "INTEGER", "Length of the interval, ns."),
                ],
                sql: concat!(
                    "WITH ",
                    clipped_to_interval!(
                        "SELECT id, ts, dur FROM sched WHERE cpu = :cpu AND dur > 0"
                    ),
                    " SELECT s.end_state, sum(clip.dur) FROM clip JOIN sched AS s USING (id)
                      GROUP BY s.end_state"
                ),
            },
        },
    ],
};

pub static THREAD_LEVEL_PARALLELISM: Module = Module {
    name: "sched.thread_level_parallelism",
    includes: &[],
    objects: &[
        Object {
            name: "sched_runnable_thread_count",
            doc: "The number of runnable (R) threads over time: one row per change point.",
            columns: &[
                col("ts", "INTEGER", "When the count took this value, ns."),
                col(
                    "runnable_thread_count",
                    "INTEGER",
                    "Threads in R from ts to the next row's ts.",
                ),
            ],
            body: Body::View(open_count!(
                "SELECT ts, dur FROM thread_state WHERE state = 'R'"
            )),
        },
        Object {
            name: "sched_uninterruptible_sleep_thread_count",
            doc: "The number of threads in uninterruptible sleep (D) over time: one row per change point.",
            columns: &[
                col("ts", "INTEGER", "When the count took this value, ns."),
                col(
                    "uninterruptible_sleep_thread_count",
                    "INTEGER",
                    "Threads in D from ts to the next row's ts.",
                ),
            ],
            body: Body::View(open_count!(
                "SELECT ts, dur FROM thread_state WHERE state = 'D'"
            )),
        },
        Object {
            name: "sched_active_cpu_count",
            doc: "The number of CPUs running a thread other than an idle one over time: one row per change point.",
            columns: &[
                col("ts", "INTEGER", "When the count took this value, ns."),
                col(
                    "active_cpu_count",
                    "INTEGER",
                    "CPUs running a task from ts to the next row's ts.",
                ),
            ],
            body: Body::View(open_count!(
                "SELECT ts, dur FROM sched WHERE utid NOT IN (SELECT utid FROM thread WHERE is_idle)"
            )),
        },
    ],
};
