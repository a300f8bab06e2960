//! The MCP prompts: the common investigations, each a plan over the tools
//! that a client offers its user by name ("investigate latency of a task",
//! "compare before and after", "what is this machine doing").

use rmcp::ErrorData;
use rmcp::model::{GetPromptResult, JsonObject, Prompt, PromptArgument, PromptMessage, Role};

use super::traces;
use crate::analyses::{
    compare, cpu_timeline, cpu_utilization, critical_path, interference, process_activity,
    scheduling_latency, search_events, task_timeline, top_tasks, trace_info,
};

/// A prompt's arguments as its text reads them: the value given, if any.
type ArgValue<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One prompt: its arguments (name, what it is, required) and its text.
struct PromptDef {
    name: &'static str,
    description: &'static str,
    arguments: &'static [(&'static str, &'static str, bool)],
    text: fn(ArgValue) -> String,
}

/// " in trace X" or "" when no trace was named.
fn in_trace(trace: Option<String>) -> String {
    trace.map_or_else(String::new, |t| {
        format!(" in trace {t:?} (pass trace = {t:?})")
    })
}

fn window_text(window: Option<String>) -> String {
    window.map_or_else(
        || "over the whole trace".into(),
        |w| format!("in the window {w:?}"),
    )
}

const PROMPTS: &[PromptDef] = &[
    PromptDef {
        name: "investigate_task_latency",
        description: "Why a task waited for a CPU: its latency, the worst waits, what held the \
                      CPU, and what it waited on.",
        arguments: &[
            ("task", "Task name, tid or pid", true),
            (
                "window",
                "Time window from the trace start, e.g. \"1s..2s\"",
                false,
            ),
            ("trace", "Trace name, when several are served", false),
        ],
        text: |arg| {
            format!(
                "Investigate the scheduling latency of the task {task:?}{trace}, {window}. \
                 1. Find its threads with {search} (text = the task). \
                 2. Call {latency} for it (tid, pid or name, with the window): report p50, p99 \
                 and max, and for the worst cases when they happened, who woke them and \
                 held_by, the threads that held the CPU meanwhile. \
                 3. Around the worst case, call {timeline} (tid, a window of a few ms around it) \
                 to see its runnable intervals and who held the CPU, and {cpu} for that CPU. \
                 4. Call {path} (tid, the same window) to see what it waited on while asleep: \
                 who woke it and that waker's own waits. \
                 5. Call {interference} (tid, the window) for who preempted it, the IRQ time \
                 that stole from or delayed it, and what its migrations cost. \
                 Answer with the cause in one or two sentences, then the evidence with times \
                 from the trace start.",
                task = arg("task").unwrap_or_default(),
                trace = in_trace(arg("trace")),
                window = window_text(arg("window")),
                search = search_events::TOOL.name,
                latency = scheduling_latency::TOOL.name,
                timeline = task_timeline::TOOL.name,
                cpu = cpu_timeline::TOOL.name,
                path = critical_path::TOOL.name,
                interference = interference::TOOL.name,
            )
        },
    },
    PromptDef {
        name: "compare_before_after",
        description: "What changed between two recordings of the same workload: CPU time, \
                      switches, latency and utilization, biggest regressions first.",
        arguments: &[
            ("before", "Name of the trace before the change", true),
            ("after", "Name of the trace after the change", true),
        ],
        text: |arg| {
            let (before, after) = (
                arg("before").unwrap_or_default(),
                arg("after").unwrap_or_default(),
            );
            format!(
                "Compare the trace {before:?} (before) with {after:?} (after); {list} names the \
                 traces. Call {compare} (before, after) first. For detail, call on each of the \
                 two (pass trace = its name) {util}, {top} (order_by cpu_time, then \
                 wakeup_latency) and {latency}. Match processes and threads across the traces \
                 by name, since pids differ. Report the biggest \
                 regressions first (more CPU time, more switches, higher p99 latency, busier \
                 CPUs), then improvements, each with both values and the change in percent; \
                 say what stayed the same.",
                list = traces::LIST_TRACES.name,
                compare = compare::TOOL.name,
                util = cpu_utilization::TOOL.name,
                top = top_tasks::TOOL.name,
                latency = scheduling_latency::TOOL.name,
            )
        },
    },
    PromptDef {
        name: "what_is_this_machine_doing",
        description: "An overview of a recording: the machine, how busy its CPUs were, the \
                      busiest tasks, latency, and process churn.",
        arguments: &[("trace", "Trace name, when several are served", false)],
        text: |arg| {
            format!(
                "Describe what this machine was doing{trace}. Call {info} (machine, CPUs, time \
                 range, drops), {util}, {top} (order_by cpu_time, limit 10), {latency} and \
                 {activity}. Answer in a short paragraph: what ran most, how loaded the CPUs \
                 were, whether any task waited long for a CPU, whether processes were spawned \
                 in bulk, and whether events were lost.",
                trace = in_trace(arg("trace")),
                info = trace_info::TOOL.name,
                util = cpu_utilization::TOOL.name,
                top = top_tasks::TOOL.name,
                latency = scheduling_latency::TOOL.name,
                activity = process_activity::TOOL.name,
            )
        },
    },
];

/// The prompts, for prompts/list.
pub(super) fn list() -> Vec<Prompt> {
    PROMPTS
        .iter()
        .map(|p| {
            let args = p
                .arguments
                .iter()
                .map(|&(name, doc, required)| {
                    PromptArgument::new(name)
                        .with_description(doc)
                        .with_required(required)
                })
                .collect();
            Prompt::new(p.name, Some(p.description), Some(args))
        })
        .collect()
}

/// One prompt filled in with its arguments, for prompts/get.
pub(super) fn get(name: &str, args: Option<&JsonObject>) -> Result<GetPromptResult, ErrorData> {
    let Some(p) = PROMPTS.iter().find(|p| p.name == name) else {
        let names: Vec<&str> = PROMPTS.iter().map(|p| p.name).collect();
        return Err(ErrorData::invalid_params(
            format!("unknown prompt {name:?}; the prompts are {names:?}"),
            None,
        ));
    };
    let empty = JsonObject::new();
    let args = args.unwrap_or(&empty);
    if let Some(unknown) = args
        .keys()
        .find(|k| !p.arguments.iter().any(|a| a.0 == k.as_str()))
    {
        let valid: Vec<&str> = p.arguments.iter().map(|a| a.0).collect();
        return Err(ErrorData::invalid_params(
            format!("unknown argument {unknown:?} of prompt {name}; its arguments are {valid:?}"),
            None,
        ));
    }
    let value = |k: &str| match args.get(k) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(missing) = p.arguments.iter().find(|a| a.2 && value(a.0).is_none()) {
        return Err(ErrorData::invalid_params(
            format!(
                "prompt {name} needs the argument {:?} ({})",
                missing.0, missing.1
            ),
            None,
        ));
    }
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, (p.text)(&value))])
            .with_description(p.description),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::registry::tool_names;

    /// Every tool a prompt names exists.
    #[test]
    fn prompts_name_real_tools() {
        let tools = tool_names();
        for p in PROMPTS {
            let text = (p.text)(&|k: &str| Some(format!("<{k}>")));
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.contains('_') && word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    let is_arg = ["order_by", "cpu_time", "wakeup_latency", "held_by"];
                    assert!(
                        tools.contains(&word) || is_arg.contains(&word),
                        "prompt {} names {word}, not a tool",
                        p.name
                    );
                }
            }
        }
    }
}
