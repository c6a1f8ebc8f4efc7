//! Which provider serves which `models:` entry.

use baton_core::DynModel;
use baton_providers::ScriptedModel;
use baton_runtime::spec::ModelSpec;
use baton_runtime::{ModelBuildError, ModelFactory, ModelField};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The providers this build of baton knows.
pub struct Providers {
    /// Overrides the script of every scripted model (`--script`).
    pub script_override: Option<PathBuf>,
}

impl ModelFactory for Providers {
    fn build(
        &self,
        alias: &str,
        spec: &ModelSpec,
        base_dir: &Path,
    ) -> Result<Arc<dyn DynModel>, ModelBuildError> {
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
            other => Err(ModelBuildError::new(
                ModelField::Provider,
                format!("unknown provider `{other}` (this build knows: scripted)"),
            )),
        }
    }
}
