//! A tool backed by a Rust closure.

use baton_core::{BoxFuture, Tool, ToolContext, ToolError, ToolSpec};
use serde_json::Value;
use std::fmt;
use std::future::Future;

type AsyncFn =
    dyn Fn(Value, ToolContext) -> BoxFuture<'static, Result<Value, String>> + Send + Sync;
type SyncFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

enum Body {
    Async(Box<AsyncFn>),
    Sync(Box<SyncFn>),
}

/// A tool whose body is a Rust closure.
///
/// The closure returns `Ok(result)` or `Err(message)`; an error becomes
/// [`ToolError::Failed`] with that message.
///
/// ```
/// use baton_core::{ToolContext, ToolSpec};
/// use baton_tools::FnTool;
/// use serde_json::{json, Value};
///
/// let spec = |name: &str| ToolSpec::new(name, "", json!({"type": "object"}));
/// let add = FnTool::sync(spec("add"), |args: Value| {
///     let a = args["a"].as_i64().ok_or("`a` must be an integer")?;
///     let b = args["b"].as_i64().ok_or("`b` must be an integer")?;
///     Ok(json!(a + b))
/// });
/// let whoami = FnTool::new(spec("whoami"), |_args: Value, ctx: ToolContext| async move {
///     Ok(json!({"step": ctx.step}))
/// });
/// # let _ = (add, whoami);
/// ```
pub struct FnTool {
    spec: ToolSpec,
    body: Body,
}

impl FnTool {
    /// A tool running the async closure `f` on each call's arguments and context.
    pub fn new<F, Fut>(spec: ToolSpec, f: F) -> Self
    where
        F: Fn(Value, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        FnTool {
            spec,
            body: Body::Async(Box::new(move |args, ctx| Box::pin(f(args, ctx)))),
        }
    }

    /// A tool running the synchronous closure `f` on each call's arguments. `f` runs on the
    /// caller's task, so it should be quick; use [`FnTool::new`] for anything that waits.
    pub fn sync<F>(spec: ToolSpec, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        FnTool {
            spec,
            body: Body::Sync(Box::new(f)),
        }
    }
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool")
            .field("spec", &self.spec)
            .field(
                "kind",
                &match self.body {
                    Body::Async(_) => "async",
                    Body::Sync(_) => "sync",
                },
            )
            .finish()
    }
}

impl Tool for FnTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
        let result = match &self.body {
            Body::Sync(f) => f(args),
            Body::Async(f) => f(args, ctx).await,
        };
        result.map_err(|message| ToolError::Failed {
            tool: self.spec.name.clone(),
            message,
        })
    }
}
