//! What the embedding program provides to workflows: models, Rust tools and Rust step functions.
//!
//! The runtime never names a concrete provider or tool; the composition root (the `baton` CLI,
//! or your service) fills a [`Registry`] and compiles workflows against it.

use crate::spec::{ModelSpec, PriceSpec};
use baton_core::{BoxFuture, DynModel, DynTool, Name};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// The state a step may see: exactly the keys it declared in `reads`.
#[derive(Clone, Debug, Default)]
pub struct View {
    entries: Vec<(Name, Arc<Value>)>,
}

impl View {
    pub(crate) fn new(entries: Vec<(Name, Arc<Value>)>) -> Self {
        View { entries }
    }

    /// The value of a key the step reads (`None` if it does not read it).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The keys and values, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The view as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| (k.to_string(), (**v).clone()))
                .collect(),
        )
    }
}

/// What a code step receives.
#[derive(Clone, Debug)]
pub struct StepInput {
    /// The step id.
    pub step: Name,
    /// For a map step: the item.
    pub item: Option<Value>,
    /// The state the step reads.
    pub state: View,
}

/// The result of a step function: ready now (no allocation), or later.
pub enum StepFuture {
    /// Done synchronously.
    Ready(Result<Value, String>),
    /// Running asynchronously.
    Pending(BoxFuture<'static, Result<Value, String>>),
}

/// A Rust function usable as a code step (`function: name` in YAML).
pub trait StepFn: Send + Sync {
    /// Run the step. `Err` carries a readable reason.
    fn call(&self, input: StepInput) -> StepFuture;
}

struct SyncFn<F>(F);
impl<F> StepFn for SyncFn<F>
where
    F: Fn(StepInput) -> Result<Value, String> + Send + Sync,
{
    fn call(&self, input: StepInput) -> StepFuture {
        StepFuture::Ready((self.0)(input))
    }
}

struct AsyncFn<F>(F);
impl<F, Fut> StepFn for AsyncFn<F>
where
    F: Fn(StepInput) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    fn call(&self, input: StepInput) -> StepFuture {
        StepFuture::Pending(Box::pin((self.0)(input)))
    }
}

/// A model as compiled into a workflow: the provider, its model name and its price.
#[derive(Clone)]
pub struct ModelEntry {
    /// The provider.
    pub model: Arc<dyn DynModel>,
    /// The provider's model name, sent in requests.
    pub name: String,
    /// Price per million tokens.
    pub price: PriceSpec,
    /// Upper bound on completion tokens.
    pub max_tokens: Option<u32>,
    /// Answer identical requests from the run store's response cache.
    pub cache: bool,
    /// Context window in tokens, if known.
    pub context_window: Option<u32>,
    /// Share of the window at which older turns are summarised.
    pub compress_at: f64,
    /// The model that writes summaries (`None`: this one).
    pub summarizer: Option<Box<ModelEntry>>,
    /// Concurrency limit shared by every run of the process.
    pub limit: Option<Arc<tokio::sync::Semaphore>>,
    /// Circuit breaker shared by every run of the process.
    pub breaker: Option<Arc<crate::limits::Breaker>>,
    /// Request-rate limit shared by every run of the process.
    pub rate: Option<Arc<crate::limits::RateLimiter>>,
}

impl ModelEntry {
    /// A model with a price and nothing else configured.
    pub fn new(model: Arc<dyn DynModel>, name: impl Into<String>, price: PriceSpec) -> Self {
        ModelEntry {
            model,
            name: name.into(),
            price,
            max_tokens: None,
            cache: false,
            context_window: None,
            compress_at: 0.8,
            summarizer: None,
            limit: None,
            breaker: None,
            rate: None,
        }
    }

    /// The same model with a context window (turns are compressed near it).
    pub fn with_context_window(mut self, tokens: u32) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// The same model, answering identical requests from the response cache.
    pub fn with_cache(mut self) -> Self {
        self.cache = true;
        self
    }
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("name", &self.name)
            .field("price", &self.price)
            .finish()
    }
}

/// Which field of a `models:` entry a build error is about (to point at it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelField {
    /// `provider`.
    Provider,
    /// `script`.
    Script,
    /// Anything else.
    Other,
}

/// Why a model could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelBuildError {
    /// The field at fault.
    pub field: ModelField,
    /// A readable reason.
    pub message: String,
}

impl ModelBuildError {
    /// An error about `field`.
    pub fn new(field: ModelField, message: impl Into<String>) -> Self {
        ModelBuildError {
            field,
            message: message.into(),
        }
    }
}

/// Builds models from the `models:` section of a workflow (the CLI maps provider names to
/// implementations here).
pub trait ModelFactory: Send + Sync {
    /// The price and context window the provider knows for a model name, used when the
    /// workflow does not give them.
    fn defaults(&self, spec: &ModelSpec) -> (Option<PriceSpec>, Option<u32>) {
        let _ = spec;
        (None, None)
    }

    /// Build the model for `alias`. `base_dir` is the workflow file's directory, against which
    /// relative paths (a script file) resolve.
    fn build(
        &self,
        alias: &str,
        spec: &ModelSpec,
        base_dir: &Path,
    ) -> Result<Arc<dyn DynModel>, ModelBuildError>;
}

/// Connects the MCP servers a workflow declares and lists their tools (the CLI does this with
/// `baton-mcp`; the runtime does not depend on an MCP implementation).
pub trait ToolSourceFactory: Send + Sync {
    /// Connect server `name` and return its tools, named `name__tool`. `Err` is a readable
    /// reason (it becomes a load error at the server's entry).
    fn connect(
        &self,
        name: &str,
        spec: &crate::spec::McpServerSpec,
        base_dir: &Path,
    ) -> Result<Vec<Arc<dyn DynTool>>, String>;
}

/// Models, tools and functions available to workflows.
#[derive(Clone, Default)]
pub struct Registry {
    pub(crate) models: HashMap<String, ModelEntry>,
    pub(crate) tools: HashMap<String, Arc<dyn DynTool>>,
    pub(crate) functions: HashMap<String, Arc<dyn StepFn>>,
    pub(crate) factory: Option<Arc<dyn ModelFactory>>,
    pub(crate) tool_sources: Option<Arc<dyn ToolSourceFactory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a model under an alias (used when the workflow does not declare that alias).
    pub fn model(mut self, alias: impl Into<String>, entry: ModelEntry) -> Self {
        self.models.insert(alias.into(), entry);
        self
    }

    /// Set the factory that builds the models a workflow declares.
    pub fn model_factory(mut self, factory: Arc<dyn ModelFactory>) -> Self {
        self.factory = Some(factory);
        self
    }

    /// Set the factory that connects the MCP servers a workflow declares.
    pub fn tool_source_factory(mut self, factory: Arc<dyn ToolSourceFactory>) -> Self {
        self.tool_sources = Some(factory);
        self
    }

    /// Register a Rust tool under its spec's name.
    pub fn tool(mut self, tool: Arc<dyn DynTool>) -> Self {
        self.tools.insert(tool.spec().name.clone(), tool);
        self
    }

    /// Register a synchronous Rust step function.
    pub fn function<F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(StepInput) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.functions.insert(name.into(), Arc::new(SyncFn(f)));
        self
    }

    /// Register an asynchronous Rust step function.
    pub fn async_function<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(StepInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.functions.insert(name.into(), Arc::new(AsyncFn(f)));
        self
    }

    /// Names of registered functions, sorted (for error messages).
    pub fn function_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.functions.keys().cloned().collect();
        v.sort();
        v
    }
}
