//! Which provider serves which `models:` entry, and how MCP servers are connected.

use baton_core::{DynModel, DynTool};
use baton_mcp::{McpClient, McpServerConfig};
use baton_providers::anthropic::{AnthropicConfig, AnthropicModel};
use baton_providers::openai::{OpenAiConfig, OpenAiModel};
use baton_providers::{ScriptedModel, prices};
use baton_runtime::spec::{McpServerSpec, ModelSpec, PriceSpec};
use baton_runtime::{ModelBuildError, ModelFactory, ModelField, ToolSourceFactory};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The providers this build of baton knows.
pub struct Providers {
    /// Overrides the script of every scripted model (`--script`).
    pub script_override: Option<PathBuf>,
}

/// An API key: from the variable the workflow names, else the provider's usual variable.
fn api_key(spec: &ModelSpec, default_var: Option<&str>) -> Result<Option<String>, ModelBuildError> {
    match &spec.api_key_env {
        Some(var) => std::env::var(var).map(Some).map_err(|_| {
            ModelBuildError::new(
                ModelField::Other,
                format!("the environment variable `{var}` (api_key_env) is not set"),
            )
        }),
        None => Ok(default_var.and_then(|v| std::env::var(v).ok())),
    }
}

impl ModelFactory for Providers {
    fn defaults(&self, spec: &ModelSpec) -> (Option<PriceSpec>, Option<u32>) {
        let model = spec.model.as_deref().unwrap_or("");
        let local = spec
            .base_url
            .as_deref()
            .is_some_and(prices::is_local_endpoint);
        let price = if spec.provider.value == "scripted" || local {
            None
        } else {
            prices::default_price(model).map(|(i, o)| PriceSpec {
                input_per_mtok: i,
                output_per_mtok: o,
            })
        };
        (price, prices::context_window(model))
    }

    fn build(
        &self,
        alias: &str,
        spec: &ModelSpec,
        base_dir: &Path,
    ) -> Result<Arc<dyn DynModel>, ModelBuildError> {
        let name = spec.model.clone().unwrap_or_else(|| alias.to_string());
        let provider_err =
            |e: baton_core::ModelError| ModelBuildError::new(ModelField::Provider, e.to_string());
        match spec.provider.value.as_str() {
            "scripted" => {
                let path = match (&self.script_override, &spec.script) {
                    (Some(p), _) => p.clone(),
                    (None, Some(s)) => base_dir.join(&s.value),
                    (None, None) => {
                        return Err(ModelBuildError::new(
                            ModelField::Provider,
                            format!(
                                "the scripted model `{alias}` needs a `script` file (or pass --script)"
                            ),
                        ));
                    }
                };
                let model = ScriptedModel::from_file(&path)
                    .map_err(|e| ModelBuildError::new(ModelField::Script, e.to_string()))?;
                Ok(Arc::new(model))
            }
            "openai" => {
                // The usual key variable only for OpenAI itself, not for a custom endpoint.
                let default_var = spec.base_url.is_none().then_some("OPENAI_API_KEY");
                let mut cfg = OpenAiConfig::new(name).with_stream(spec.stream);
                if let Some(url) = &spec.base_url {
                    cfg = cfg.with_base_url(url.clone());
                }
                if let Some(key) = api_key(spec, default_var)? {
                    cfg = cfg.with_api_key(key);
                }
                Ok(Arc::new(OpenAiModel::new(cfg).map_err(provider_err)?))
            }
            "anthropic" => {
                let mut cfg = AnthropicConfig::new(name).with_stream(spec.stream);
                if let Some(url) = &spec.base_url {
                    cfg = cfg.with_base_url(url.clone());
                }
                if let Some(n) = spec.max_tokens {
                    cfg = cfg.with_max_tokens(n);
                }
                if let Some(key) = api_key(spec, Some("ANTHROPIC_API_KEY"))? {
                    cfg = cfg.with_api_key(key);
                }
                Ok(Arc::new(AnthropicModel::new(cfg).map_err(provider_err)?))
            }
            other => Err(ModelBuildError::new(
                ModelField::Provider,
                format!(
                    "unknown provider `{other}` (this build knows: scripted, openai, anthropic)"
                ),
            )),
        }
    }
}

/// MCP clients live as long as the process: their tools are used by runs until it exits.
fn clients() -> &'static Mutex<Vec<McpClient>> {
    static CLIENTS: OnceLock<Mutex<Vec<McpClient>>> = OnceLock::new();
    CLIENTS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Connects the MCP servers a workflow declares.
pub struct McpServers;

impl ToolSourceFactory for McpServers {
    fn connect(
        &self,
        name: &str,
        spec: &McpServerSpec,
        base_dir: &Path,
    ) -> Result<Vec<Arc<dyn DynTool>>, String> {
        let mut cfg = match (&spec.command, &spec.url) {
            (Some(cmd), None) => McpServerConfig::stdio(name, cmd.value.0.clone())
                .with_cwd(base_dir.join(spec.cwd.as_deref().unwrap_or("."))),
            (None, Some(url)) => McpServerConfig::http(name, url.value.clone()),
            _ => return Err("needs exactly one of `command` and `url`".into()),
        };
        for (k, v) in &spec.env {
            cfg = cfg.with_env(k.clone(), v.clone());
        }
        for k in &spec.pass_env {
            let v = std::env::var(k).map_err(|_| format!("pass_env: `{k}` is not set"))?;
            cfg = cfg.with_env(k.clone(), v);
        }
        cfg = cfg.with_inherited_env(spec.inherit_env);
        for (k, v) in &spec.headers {
            cfg = cfg.with_header(k.clone(), v.clone());
        }
        if let Some(var) = &spec.bearer_token_env {
            let token =
                std::env::var(var).map_err(|_| format!("bearer_token_env: `{var}` is not set"))?;
            cfg = cfg.with_header("Authorization", format!("Bearer {token}"));
        }
        if let Some(t) = spec.timeout {
            cfg = cfg.with_timeout(t.0);
        }
        if let Some(t) = spec.startup_timeout {
            cfg = cfg.with_startup_timeout(t.0);
        }
        for (tool, effect) in &spec.effects {
            cfg = cfg.with_effect(tool.clone(), *effect);
        }
        // Compiling is synchronous; connecting is not. The CLI runs on a multi-thread runtime.
        let client = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(McpClient::connect(cfg))
        })
        .map_err(|e| e.to_string())?;
        for s in client.skipped_tools() {
            eprintln!("warning: MCP server `{name}`: tool skipped: {s:?}");
        }
        let tools = client.tools();
        clients()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client);
        Ok(tools)
    }
}
