//! Every answer a test gets from a tool is checked against the outputSchema
//! that tool declares in tools/list, with an independent JSON Schema validator.

use std::collections::HashMap;

use rmcp::service::{RoleClient, RunningService};
use serde_json::Value;
use tokio::sync::OnceCell;

type Client = RunningService<RoleClient, ()>;

/// The output schemas of tools/list by tool name (the same for every server
/// a test starts: the schemas do not depend on the traces).
static SCHEMAS: OnceCell<HashMap<String, Value>> = OnceCell::const_new();

/// Panics unless `answer` validates against `tool`'s outputSchema.
pub async fn validate(c: &Client, tool: &str, answer: &Value) {
    let schemas = SCHEMAS
        .get_or_init(|| async {
            let tools = c.list_all_tools().await.expect("tools/list");
            tools
                .into_iter()
                .filter_map(|t| {
                    let schema = Value::Object((*t.output_schema?).clone());
                    Some((t.name.to_string(), schema))
                })
                .collect()
        })
        .await;
    let schema = schemas
        .get(tool)
        .unwrap_or_else(|| panic!("{tool} has no output schema"));
    let validator = jsonschema::validator_for(schema)
        .unwrap_or_else(|e| panic!("{tool}'s output schema is not a valid schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{tool}'s answer does not fit its outputSchema: {errors:?}\nanswer: {answer}"
    );
}
