//! A tool backed by a program speaking JSON over stdin/stdout.

use crate::secrets::{SecretResolver, SecretStore, redact, redact_value};
use crate::subprocess::{SubprocessError, SubprocessOptions, run_json};
use baton_core::{Tool, ToolContext, ToolError, ToolSpec};
use serde_json::{Value, json};
use std::sync::Arc;

/// A tool that runs a program for each call.
///
/// The program receives, on stdin, one JSON object:
///
/// ```json
/// {"args": {...}, "context": {"run_id": "...", "step": "...", "idempotency_key": "..."}}
/// ```
///
/// and must print its result as JSON on stdout (empty output is `null`) and exit with status 0.
/// A non-zero exit, invalid output or a failure to start becomes [`ToolError::Failed`] (with
/// the tail of stderr in the message); running past the timeout kills the program and becomes
/// [`ToolError::Timeout`].
///
/// With [`SubprocessTool::with_secrets`], `{{secret.NAME}}` placeholders in the values of
/// [`SubprocessOptions::env`] are resolved when each call starts (never in the arguments), and
/// every value used is redacted (`***`) from the result and from error messages.
///
/// ```no_run
/// use baton_core::ToolSpec;
/// use baton_tools::{SubprocessOptions, SubprocessTool};
///
/// let tool = SubprocessTool::new(
///     ToolSpec::new("score", "Score a draft", serde_json::json!({"type": "object"})),
///     vec!["python3".into(), "score.py".into()],
///     SubprocessOptions::default(),
/// );
/// ```
#[derive(Clone)]
pub struct SubprocessTool {
    spec: ToolSpec,
    command: Vec<String>,
    options: SubprocessOptions,
    secrets: Option<Arc<dyn SecretStore>>,
}

impl std::fmt::Debug for SubprocessTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessTool")
            .field("spec", &self.spec)
            .field("command", &self.command)
            .field("options", &self.options)
            .field("secrets", &self.secrets.is_some())
            .finish()
    }
}

impl SubprocessTool {
    /// A tool named and described by `spec` that runs `command` (program, then arguments).
    pub fn new(spec: ToolSpec, command: Vec<String>, options: SubprocessOptions) -> Self {
        SubprocessTool {
            spec,
            command,
            options,
            secrets: None,
        }
    }

    /// The same tool resolving `{{secret.NAME}}` placeholders in its environment from `store`.
    pub fn with_secrets(mut self, store: Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(store);
        self
    }

    /// The program and its arguments.
    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// How the program is run.
    pub fn options(&self) -> &SubprocessOptions {
        &self.options
    }

    fn to_tool_error(&self, err: SubprocessError) -> ToolError {
        match err {
            SubprocessError::Timeout { after_ms, .. } => ToolError::Timeout {
                tool: self.spec.name.clone(),
                after_ms,
            },
            other => ToolError::Failed {
                tool: self.spec.name.clone(),
                message: other.to_string(),
            },
        }
    }
}

impl Tool for SubprocessTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
        let request = json!({
            "args": args,
            "context": {
                "run_id": ctx.run_id,
                "step": ctx.step,
                "idempotency_key": ctx.idempotency_key,
            },
        });
        if self.secrets.is_none() {
            return run_json(&self.command, &request, &self.options)
                .await
                .map_err(|e| self.to_tool_error(e));
        }
        let mut resolver = SecretResolver::new(self.secrets.as_deref());
        let mut options = self.options.clone();
        for (name, value) in &mut options.env {
            *value = resolver.resolve_str(value).map_err(|e| ToolError::Failed {
                tool: self.spec.name.clone(),
                message: format!("environment variable `{name}`: {e}"),
            })?;
        }
        let used = resolver.used();
        match run_json(&self.command, &request, &options).await {
            Ok(value) => Ok(redact_value(&value, used)),
            Err(e) => Err(match self.to_tool_error(e) {
                ToolError::Failed { tool, message } => ToolError::Failed {
                    tool,
                    message: redact(&message, used),
                },
                other => other,
            }),
        }
    }
}
