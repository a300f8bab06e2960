//! The MCP server: rmcp's handler over the tool registry and the schema
//! resource.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, JsonObject, ListPromptsResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::call::{Entry, State};
use super::schema::{self, Side};
use super::{catalogue, prompts, registry};

#[derive(Clone)]
pub(super) struct Server {
    state: Arc<State>,
    tools: Arc<[Entry]>,
    /// Each tool's compact input schema, which its calls are checked against
    /// (tools/list shows it `listed`), in the order of `tools`.
    arg_schemas: Arc<[JsonObject]>,
    instructions: Arc<str>,
}

impl Server {
    pub fn new(state: State) -> Server {
        let mut tools = registry::tools();
        if state.recorder.is_some() {
            tools.extend(registry::recording_tools());
        }
        let mut arg_schemas = Vec::with_capacity(tools.len());
        for entry in &mut tools {
            let tool = &mut entry.tool;
            let checked = schema::compact(&tool.input_schema, Side::Input);
            tool.input_schema = Arc::new(schema::listed(&checked));
            arg_schemas.push(checked);
            if let Some(output) = &tool.output_schema {
                tool.output_schema = Some(Arc::new(schema::compact(output, Side::Output)));
            }
        }
        let tools: Arc<[Entry]> = tools.into();
        Server {
            state: Arc::new(state),
            instructions: registry::instructions(&tools).into(),
            tools,
            arg_schemas: arg_schemas.into(),
        }
    }

    fn tool(&self, name: &str) -> Option<&Entry> {
        self.tools.iter().find(|t| t.name == name)
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("schedlens", env!("CARGO_PKG_VERSION")))
        .with_instructions(&*self.instructions)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(at) = self.tools.iter().position(|t| t.name == request.name) else {
            return Err(ErrorData::invalid_params("tool not found", None));
        };
        let tool = &self.tools[at];
        let mut args = request.arguments.unwrap_or_default();
        if let Err(message) = schema::check_args(tool.name, &self.arg_schemas[at], &mut args) {
            return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
        }
        let result = match (tool.call)(self.state.clone(), args, context).await {
            Ok(output) => CallToolResult::structured(output),
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.tools.iter().map(|t| t.tool.clone()).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool(name).map(|t| t.tool.clone())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(catalogue::resources()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(catalogue::read_resource(&request.uri)?.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::list()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Ok(prompts::get(&request.name, request.arguments.as_ref())?.into())
    }
}
