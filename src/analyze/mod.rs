//! Loading Perfetto traces into SQLite and the commands on top: `query`,
//! `summary` and the MCP server of `analyze`. (See issues 3 and 4.)
