//! The scheduler analyses shared by `summary` and the MCP tools: CPU
//! utilization, top tasks, scheduling latency, timelines, process tree.
//! (Issue 4; owner: mcp.)
