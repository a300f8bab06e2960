//! Every tool the server offers, once: the list below is the tools/list
//! order (discovery first, then the analyses, then raw SQL), and the server
//! instructions name the tools by their role.

use super::call::Entry;
use super::catalogue::{self, SCHEMA_URI};
use super::query;
use super::recorder;
use super::traces;
use crate::analyses::{
    compare, cpu_timeline, cpu_utilization, critical_path, interference, process_activity,
    process_tree, scheduling_latency, search_events, stacks, task_timeline, top_tasks, trace_info,
};

/// What a tool is for, which is where the instructions mention it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The first call on a trace.
    Overview,
    /// Which traces there are.
    Traces,
    /// Finding tasks, events and CPUs by name.
    Find,
    /// The tables and their columns.
    Schema,
    /// Answers to the common questions.
    Analysis,
    /// Raw SQL, for the rest.
    Sql,
    /// Recording through the recorder service (only with --recorder).
    Record,
}

/// Every tool, in tools/list order.
pub(super) fn tools() -> Vec<Entry> {
    use Role::*;
    vec![
        Entry::analysis(Overview, trace_info::TOOL),
        Entry::on_trace_list(Traces, traces::LIST_TRACES),
        Entry::fleet(Traces),
        Entry::analysis(Find, search_events::TOOL),
        Entry::sandboxed(Schema, catalogue::LIST_TABLES),
        Entry::sandboxed(Schema, catalogue::DESCRIBE_TABLE),
        Entry::analysis(Analysis, cpu_utilization::TOOL),
        Entry::analysis(Analysis, top_tasks::TOOL),
        Entry::analysis(Analysis, scheduling_latency::TOOL),
        Entry::analysis(Analysis, task_timeline::TOOL),
        Entry::analysis(Analysis, critical_path::TOOL),
        Entry::analysis(Analysis, interference::TOOL),
        Entry::analysis(Analysis, stacks::TOOL),
        Entry::analysis(Analysis, cpu_timeline::TOOL),
        Entry::analysis(Analysis, process_tree::TOOL),
        Entry::analysis(Analysis, process_activity::TOOL),
        Entry::on_two_traces(Analysis, compare::TOOL),
        Entry::in_worker(Sql, query::QUERY),
    ]
}

/// The tools `--recorder` adds after those, in tools/list order.
pub(super) fn recording_tools() -> Vec<Entry> {
    recorder::tools()
}

/// The names of the tools `--recorder` adds, in tools/list order.
pub fn recording_tool_names() -> Vec<&'static str> {
    recording_tools().iter().map(|t| t.name).collect()
}

/// The tool names, in tools/list order.
pub fn tool_names() -> Vec<&'static str> {
    tools().iter().map(|t| t.name).collect()
}

/// The server instructions: how to go about a trace, naming every tool.
pub(super) fn instructions(tools: &[Entry]) -> String {
    let named = |role: Role, separator: &str| {
        let names: Vec<&str> = tools
            .iter()
            .filter(|t| t.role == role)
            .map(|t| t.name)
            .collect();
        names.join(separator)
    };
    format!(
        "schedlens serves recordings of the Linux scheduler (Perfetto traces loaded into SQLite \
         tables named as in Perfetto's trace_processor). Start with {overview} (machine, CPUs and \
         topology, time range, event counts, drops). Then {find} to find tasks, event types or \
         CPUs by name, and {schema} for the schema (also the resource {SCHEMA_URI}). For common \
         questions use the analysis tools: {analyses}. Use {sql} (one read-only SQL statement) \
         for the rest. Times you pass are from the trace start: nanoseconds or strings like \
         \"1.5s\", windows like \"1s..2s\" or {{start, end}} (default: the whole trace); results give times from the trace start. With \
         several traces, pass trace = its name ({traces}).",
        overview = named(Role::Overview, ", "),
        find = named(Role::Find, ", "),
        schema = named(Role::Schema, " / "),
        analyses = named(Role::Analysis, ", "),
        sql = named(Role::Sql, ", "),
        traces = named(Role::Traces, ", "),
    ) + &if tools.iter().any(|t| t.role == Role::Record) {
        format!(
            " This server can also record: {record}; list_recordable_events first shows what \
             and the limits, and a recorded trace is then available to every tool by the name \
             record returns.",
            record = named(Role::Record, ", ")
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_in_the_instructions() {
        let mut tools = tools();
        tools.extend(recording_tools());
        let text = instructions(&tools);
        let mut names = tool_names();
        names.extend(recording_tool_names());
        for name in &names {
            assert!(text.contains(name), "the instructions leave out {name}");
        }
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a tool name is used twice");
    }

    /// The README's tool tables list the tools of the registry, in its order.
    #[test]
    fn readme_lists_every_tool_in_order() {
        assert_eq!(
            readme_table("tool"),
            tool_names(),
            "README tool table vs the tool registry"
        );
        assert_eq!(
            readme_table("recording tool"),
            recording_tool_names(),
            "README recording tool table vs the tool registry"
        );
    }

    /// The tool names of the README table whose first column is `header`.
    fn readme_table(header: &str) -> Vec<String> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split(&format!("\n| {header} | answers |\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("the README has a table | {header} | answers |"));
        let mut listed = Vec::new();
        for row in table.lines().skip(1).take_while(|l| l.starts_with('|')) {
            let first_cell = row.split('|').nth(1).unwrap_or_default();
            // `name(args)` entries, several to a cell.
            for quoted in first_cell.split('`').skip(1).step_by(2) {
                let name = quoted.split('(').next().unwrap_or_default().trim();
                listed.push(name.to_string());
            }
        }
        listed
    }
}
