//! The stdio transport: JSON-RPC lines between the client and rmcp, with the
//! two mistakes rmcp leaves a client waiting on answered here. A line that is
//! not JSON gets a -32700 reply (rmcp drops it without a word), and a request
//! whose params do not fit its method (tools/call without a name) gets -32602
//! with its id (rmcp answers -32600 without an id, which no client can match
//! to its request). Every other line goes to rmcp as it came.

use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage, ReadResourceRequestParams};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Longest message line read; a longer one is answered as unparsable and
/// skipped, so a runaway client cannot make the server hold it all.
const MAX_LINE_BYTES: usize = 64 << 20;

/// The transport rmcp serves on, between `input` and `output` (stdin and
/// stdout), and the task that copies rmcp's answers to `output`: await it
/// after the session ends, so the last answers are written. (One duplex
/// stream: rmcp's dropping it at the end is what ends that copy.)
pub(super) fn transport<R, W>(input: R, output: W) -> (DuplexStream, JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_side, our_side) = tokio::io::duplex(1 << 16);
    let (from_rmcp, to_rmcp) = tokio::io::split(our_side);
    let output = Arc::new(Mutex::new(output));
    tokio::spawn(filter_input(input, to_rmcp, output.clone()));
    let writer = tokio::spawn(copy_lines(from_rmcp, output));
    (rmcp_side, writer)
}

/// The reply for a line, when this transport answers it instead of rmcp.
fn reply_to(line: &[u8]) -> Option<Value> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let message: Value = match serde_json::from_slice(line) {
        Ok(message) => message,
        Err(e) => return Some(error(Value::Null, -32700, format!("parse error: {e}"))),
    };
    let id = message.get("id").filter(|id| id.is_string() || id.is_i64());
    let method = message.get("method").and_then(Value::as_str);
    let (Some(id), Some(method)) = (id, method) else {
        return None; // rmcp answers or drops what has no id or method
    };
    // rmcp takes a request whose params do not fit its method for a custom
    // request, or answers it without an id: check the params of the methods
    // a client calls with arguments.
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let fits = match method {
        "tools/call" => serde_json::from_value::<CallToolRequestParams>(params).err(),
        "resources/read" => serde_json::from_value::<ReadResourceRequestParams>(params).err(),
        _ => serde_json::from_value::<ClientJsonRpcMessage>(message.clone()).err(),
    };
    fits.map(|e| {
        error(
            id.clone(),
            -32602,
            format!("invalid params for {method}: {e}"),
        )
    })
}

fn error(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Reads the client's lines, answering those `reply_to` answers and passing
/// the rest to rmcp; ends rmcp's input at the client's end of input.
async fn filter_input<R, W, O>(input: R, mut to_rmcp: W, output: Arc<Mutex<O>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let reply = if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
            if skip_line(&mut input).await.is_err() {
                break;
            }
            Some(error(
                Value::Null,
                -32700,
                format!("parse error: message longer than {MAX_LINE_BYTES} bytes"),
            ))
        } else {
            reply_to(&line)
        };
        let sent = match reply {
            Some(reply) => write_line(&output, &reply.to_string()).await,
            None => {
                async {
                    to_rmcp.write_all(&line).await?;
                    if !line.ends_with(b"\n") {
                        to_rmcp.write_all(b"\n").await?;
                    }
                    to_rmcp.flush().await
                }
                .await
            }
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = to_rmcp.shutdown().await;
}

/// Reads past the end of the current line.
async fn skip_line<R: AsyncRead + Unpin>(input: &mut BufReader<R>) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

/// Copies rmcp's lines to the client whole, so a reply of ours never lands
/// inside one of them.
async fn copy_lines<R, O>(from_rmcp: R, output: Arc<Mutex<O>>)
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(from_rmcp).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write_line(&output, &line).await.is_err() {
            break;
        }
    }
}

async fn write_line<O: AsyncWrite + Unpin>(output: &Mutex<O>, line: &str) -> std::io::Result<()> {
    let mut out = output.lock().await;
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let code = |line: &str| reply_to(line.as_bytes()).map(|r| r["error"]["code"].clone());
        assert_eq!(code("{not json"), Some(json!(-32700)));
        assert_eq!(code(""), None);
        assert_eq!(code("  \r\n"), None);
        let r = reply_to(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#);
        let r = r.expect("answered");
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (json!(7), json!(-32602))
        );
        assert!(
            r["error"]["message"].as_str().unwrap().contains("name"),
            "{r}"
        );
        let ok = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(reply_to(ok), None);
        assert_eq!(
            reply_to(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
    }
}
