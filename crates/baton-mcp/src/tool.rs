//! An MCP server's tool as a baton [`Tool`].

use crate::client::Connection;
use baton_core::{SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The behaviour hints an MCP server gives for a tool (its `annotations`). `None` means the
/// server did not say.
///
/// They are hints: MCP asks clients not to trust them from servers they do not trust. Pin a
/// tool's class with [`McpServerConfig::with_effect`](crate::McpServerConfig::with_effect) when
/// the hint is missing or wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToolHints {
    /// `readOnlyHint`: the tool does not modify its environment (MCP default: false).
    pub read_only: Option<bool>,
    /// `destructiveHint`: the tool may destroy or overwrite; false means it only adds
    /// (MCP default: true; meaningful only when not read-only).
    pub destructive: Option<bool>,
    /// `idempotentHint`: repeating a call with the same arguments has no further effect
    /// (MCP default: false; meaningful only when not read-only).
    pub idempotent: Option<bool>,
    /// `openWorldHint`: the tool talks to an open world of external entities (MCP default: true).
    pub open_world: Option<bool>,
}

impl ToolHints {
    /// The baton side-effect class these hints imply:
    ///
    /// | hints | class |
    /// |---|---|
    /// | `readOnlyHint: true` | [`SideEffect::ReadOnly`] |
    /// | else `idempotentHint: true` | [`SideEffect::Idempotent`] |
    /// | anything else (no hints, `destructiveHint` true or false) | [`SideEffect::Irreversible`] |
    ///
    /// `destructiveHint: false` ("only additive updates") does not make a tool compensatable:
    /// an additive effect, such as a sent message or a created order, is not undone by anything
    /// baton knows of. (Baton recovers compensatable and irreversible calls the same way anyway:
    /// it asks a human.)
    pub fn effect(&self) -> SideEffect {
        if self.read_only == Some(true) {
            SideEffect::ReadOnly
        } else if self.idempotent == Some(true) {
            SideEffect::Idempotent
        } else {
            SideEffect::Irreversible
        }
    }
}

/// A tool of an MCP server, callable as a baton [`Tool`].
///
/// Its spec carries the prefixed name (`server__tool`), the server's description, the tool's
/// input schema as `parameters`, and a side-effect class derived from its
/// [hints](ToolHints::effect) unless the configuration pins one. A call is a `tools/call` of
/// the server's own name; see [`McpTool::call`](Tool::call) for how its result becomes a value.
///
/// The tool does not keep the server alive: once its [`McpClient`](crate::McpClient) is
/// closed or dropped, calls fail with [`ToolError::Failed`] ("MCP server `x` is closed").
#[derive(Clone)]
pub struct McpTool {
    spec: ToolSpec,
    remote_name: String,
    hints: ToolHints,
    output_schema: Option<Value>,
    timeout: Duration,
    conn: Arc<Connection>,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool")
            .field("spec", &self.spec)
            .field("server", &self.conn.server)
            .field("remote_name", &self.remote_name)
            .field("hints", &self.hints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl McpTool {
    pub(crate) fn new(
        spec: ToolSpec,
        remote_name: String,
        hints: ToolHints,
        output_schema: Option<Value>,
        timeout: Duration,
        conn: Arc<Connection>,
    ) -> Self {
        McpTool {
            spec,
            remote_name,
            hints,
            output_schema,
            timeout,
            conn,
        }
    }

    /// The name of the server it belongs to.
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    /// The tool's own name on its server (unprefixed).
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }

    /// The server's hints about the tool's behaviour.
    pub fn hints(&self) -> ToolHints {
        self.hints
    }

    /// The JSON Schema of the tool's structured output, if the server declared one.
    pub fn output_schema(&self) -> Option<&Value> {
        self.output_schema.as_ref()
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same tool with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same tool with another side-effect class.
    pub fn with_effect(mut self, effect: SideEffect) -> Self {
        self.spec.effect = effect;
        self
    }
}

impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// Sends `tools/call` with the tool's own name and `args` (an object, or `null` for none),
    /// and the call's idempotency key in `_meta` as `baton/idempotency_key`.
    ///
    /// - A result with `isError: true` is [`ToolError::Failed`] with the result's text.
    /// - Otherwise, `structuredContent` when present; else, when every content block is text,
    ///   the texts joined by newlines, parsed as JSON if they are JSON, else as a JSON string;
    ///   else an array describing each block (see the crate docs); no content is `null`.
    /// - A JSON-RPC error (unknown tool, invalid arguments the server rejects), a closed
    ///   connection or a server that died is [`ToolError::Failed`] naming the server.
    /// - No answer within the timeout is [`ToolError::Timeout`]; the server is sent
    ///   `notifications/cancelled` for the request.
    async fn call(&self, args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
        self.conn
            .call(
                &self.spec.name,
                &self.remote_name,
                args,
                &ctx.idempotency_key,
                self.timeout,
            )
            .await
    }
}

/// Normalises a tool's input schema for model APIs: an empty schema becomes
/// `{"type": "object"}`, and a schema without a `type` gets `"type": "object"`.
pub(crate) fn normalise_schema(schema: &Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    if !schema.contains_key("type") {
        schema.insert("type".into(), json!("object"));
    }
    Value::Object(schema)
}

/// Turns a `tools/call` result (in MCP's wire form) into the tool's value or error.
pub(crate) fn convert_result(tool: &str, result: Value) -> Result<Value, ToolError> {
    let Value::Object(mut result) = result else {
        return Err(ToolError::Failed {
            tool: tool.into(),
            message: format!("the server returned a result that is not an object: {result}"),
        });
    };
    let content = match result.remove("content") {
        Some(Value::Array(blocks)) => blocks,
        _ => Vec::new(),
    };
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        let text = text_of(&content);
        let message = if !text.is_empty() {
            text
        } else if !content.is_empty() {
            Value::Array(content.iter().map(describe_block).collect()).to_string()
        } else {
            "the tool reported an error without a message".into()
        };
        return Err(ToolError::Failed {
            tool: tool.into(),
            message,
        });
    }
    if let Some(structured) = result.remove("structuredContent") {
        return Ok(structured);
    }
    if content.is_empty() {
        return Ok(Value::Null);
    }
    let all_text = content
        .iter()
        .all(|b| b.get("type").and_then(Value::as_str) == Some("text"));
    if all_text {
        let text = text_of(&content);
        return Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)));
    }
    Ok(Value::Array(content.iter().map(describe_block).collect()))
}

/// The text blocks' texts, joined by newlines.
fn text_of(content: &[Value]) -> String {
    content
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON object describing one content block, without binary payloads:
///
/// - text: `{"type": "text", "text": ...}`
/// - image, audio: `{"type": "image", "mime_type": ..., "bytes": <decoded size>}`
/// - embedded resource: `{"type": "resource", "uri": ..., "mime_type": ..., "text": ...}`
///   (or `"bytes"` instead of `"text"` for a binary one)
/// - resource link: `{"type": "resource_link", "uri": ..., "name": ..., "description": ...,
///   "mime_type": ...}`
/// - anything else: the block as the server sent it.
fn describe_block(block: &Value) -> Value {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    let field = |obj: &Value, key: &str| obj.get(key).cloned().unwrap_or(Value::Null);
    match kind {
        "text" => json!({"type": "text", "text": field(block, "text")}),
        "image" | "audio" => json!({
            "type": kind,
            "mime_type": field(block, "mimeType"),
            "bytes": base64_len(block.get("data").and_then(Value::as_str).unwrap_or("")),
        }),
        "resource" => {
            let resource = block.get("resource").cloned().unwrap_or(Value::Null);
            let mut out = json!({
                "type": "resource",
                "uri": field(&resource, "uri"),
                "mime_type": field(&resource, "mimeType"),
            });
            if let Some(text) = resource.get("text") {
                out["text"] = text.clone();
            } else if let Some(blob) = resource.get("blob").and_then(Value::as_str) {
                out["bytes"] = json!(base64_len(blob));
            }
            out
        }
        "resource_link" => {
            let mut out = json!({
                "type": "resource_link",
                "uri": field(block, "uri"),
                "name": field(block, "name"),
            });
            for (from, to) in [("description", "description"), ("mimeType", "mime_type")] {
                if let Some(v) = block.get(from) {
                    out[to] = v.clone();
                }
            }
            out
        }
        _ => block.clone(),
    }
}

/// The decoded size of base64 text.
fn base64_len(data: &str) -> usize {
    let data = data.trim_end();
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    (data.len() / 4 * 3 + (data.len() % 4) * 3 / 4).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_from_hints() {
        let h = |r, d, i| ToolHints {
            read_only: r,
            destructive: d,
            idempotent: i,
            open_world: None,
        };
        assert_eq!(h(None, None, None).effect(), SideEffect::Irreversible);
        assert_eq!(
            h(Some(true), Some(true), None).effect(),
            SideEffect::ReadOnly
        );
        assert_eq!(
            h(Some(false), Some(false), Some(true)).effect(),
            SideEffect::Idempotent
        );
        assert_eq!(
            h(Some(false), Some(false), Some(false)).effect(),
            SideEffect::Irreversible
        );
        assert_eq!(
            h(None, Some(true), Some(false)).effect(),
            SideEffect::Irreversible
        );
    }

    #[test]
    fn schemas_are_normalised() {
        assert_eq!(normalise_schema(&Map::new()), json!({"type": "object"}));
        let Value::Object(s) = json!({"properties": {"a": {"type": "number"}}}) else {
            unreachable!()
        };
        assert_eq!(
            normalise_schema(&s),
            json!({"properties": {"a": {"type": "number"}}, "type": "object"})
        );
    }

    #[test]
    fn results() {
        let ok = |v| convert_result("t", v).unwrap();
        assert_eq!(
            ok(json!({"content": [{"type": "text", "text": "hi"}]})),
            json!("hi")
        );
        assert_eq!(
            ok(json!({"content": [{"type": "text", "text": "{\"a\": 1}"}]})),
            json!({"a": 1})
        );
        assert_eq!(
            ok(json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})),
            json!("a\nb")
        );
        assert_eq!(
            ok(json!({"content": [{"type": "text", "text": "x"}], "structuredContent": {"t": 3}})),
            json!({"t": 3})
        );
        assert_eq!(ok(json!({"content": []})), Value::Null);
        assert_eq!(
            ok(json!({"content": [
                {"type": "text", "text": "pic"},
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a", "mimeType": "text/plain", "text": "A"}},
                {"type": "resource", "resource": {"uri": "file:///b", "blob": "AAAA"}},
                {"type": "resource_link", "uri": "file:///c", "name": "c", "mimeType": "text/x"},
            ]})),
            json!([
                {"type": "text", "text": "pic"},
                {"type": "image", "mime_type": "image/png", "bytes": 5},
                {"type": "resource", "uri": "file:///a", "mime_type": "text/plain", "text": "A"},
                {"type": "resource", "uri": "file:///b", "mime_type": null, "bytes": 3},
                {"type": "resource_link", "uri": "file:///c", "name": "c", "mime_type": "text/x"},
            ])
        );
        let err = convert_result(
            "t",
            json!({"content": [{"type": "text", "text": "boom"}], "isError": true}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ToolError::Failed {
                tool: "t".into(),
                message: "boom".into()
            }
        );
        let err = convert_result("t", json!({"isError": true})).unwrap_err();
        assert!(err.to_string().contains("without a message"), "{err}");
    }

    #[test]
    fn base64_sizes() {
        assert_eq!(base64_len(""), 0);
        assert_eq!(base64_len("aGVsbG8="), 5);
        assert_eq!(base64_len("aGVsbA=="), 4);
        assert_eq!(base64_len("aGVs"), 3);
    }
}
