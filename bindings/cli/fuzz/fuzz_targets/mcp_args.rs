//! MCP messages and tool arguments as `tribute mcp` reads them: a JSON-RPC message from the
//! client (`rmcp::model::ClientJsonRpcMessage`) and, for a `tools/call`, its `arguments`
//! deserialised into the tool's parameters (`SearchParams`, `AskParams`,
//! `ReceiptsParams` of bindings/cli/src/mcp.rs, compiled in here) the way rmcp's
//! `Parameters` extractor does. The input is also tried as the arguments object itself.
//!
//! Properties: no panic; a message that parses serialises to JSON that parses again.

// The CLI's source folder as a module, so that mcp.rs's own submodules (src/mcp/…) resolve
// as they do in the binary.
#[allow(dead_code, unused_imports)]
#[path = "../../src"]
mod cli {
    pub mod mcp;
}
use cli::mcp;

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::Value;

/// Deserialises tool arguments for the tool `name` as the server would.
fn tool_arguments(name: &str, arguments: serde_json::Map<String, Value>) {
    let value = Value::Object(arguments);
    match name {
        "search" => drop(serde_json::from_value::<mcp::SearchParams>(value)),
        "ask" => drop(serde_json::from_value::<mcp::AskParams>(value)),
        "receipts" => drop(serde_json::from_value::<mcp::ReceiptsParams>(value)),
        _ => {}
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(Value::Object(arguments)) = serde_json::from_slice::<Value>(data) {
            for name in ["search", "ask", "receipts"] {
                tool_arguments(name, arguments.clone());
            }
        }
        let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(data) else {
            return;
        };
        let text = serde_json::to_string(&message).expect("a parsed message serialises");
        // Not a byte-for-byte fixed point: serde_json (without `float_roundtrip`) may read a
        // long float back one ulp off, which the first 100 s run found at once.
        let again: ClientJsonRpcMessage = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a serialised message does not parse: {e}\n{text}"));
        serde_json::to_string(&again).expect("serialises again");
        if let JsonRpcMessage::Request(request) = message
            && let ClientRequest::CallToolRequest(call) = request.request
        {
            tool_arguments(&call.params.name, call.params.arguments.unwrap_or_default());
        }
    });
}
