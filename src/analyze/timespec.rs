//! Time arguments: nanoseconds from trace start or human strings ("1.5s",
//! "200ms"). (Issue 4; owner: mcp.)
