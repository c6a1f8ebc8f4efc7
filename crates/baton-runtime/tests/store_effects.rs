//! Effects that use the store themselves (sub-workflow runs, the response cache) next to the
//! run's own journaling, on SQLite: a run never waits on the store for something only its own
//! suspended effects could release. Before sub-workflows and cached calls ran on tasks of their
//! own, a run with a sub-workflow beside a parallel agent step hung now and then.

#![allow(clippy::unwrap_used)]

use baton_core::RunStatus;
use baton_providers::ScriptedModel;
use baton_runtime::spec::{ModelSpec, PriceSpec};
use baton_runtime::{ModelBuildError, ModelFactory, Registry, Runtime, load_file};
use baton_store::{SqliteOptions, SqliteStore};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PARENT: &str = r#"
name: parent
models:
  default: {provider: scripted, script: script.yaml, cache: true}
agents:
  planner: {instructions: "Plan."}
  scheduler: {instructions: "Schedule."}
state:
  topic: replace
  plan: replace
  part: replace
  dates: replace
steps:
  - id: plan
    agent: planner
    reads: [topic]
    prompt: "Plan {{ topic }}"
    output: plan
  - id: part
    needs: plan
    workflow: child.yaml
    input: {topic: topic}
    output: part
  - id: dates
    needs: plan
    agent: scheduler
    reads: [topic]
    prompt: "Dates for {{ topic }}"
    output: dates
"#;

const CHILD: &str = r#"
name: child
models:
  default: {provider: scripted, script: script.yaml}
agents:
  writer: {instructions: "Write."}
state:
  topic: replace
  text: replace
steps:
  - id: write
    agent: writer
    reads: [topic]
    prompt: "Write about {{ topic }}"
    output: text
"#;

const SCRIPT: &str = r#"
agents:
  planner: {replies: [{text: "the plan"}], then: repeat_last}
  scheduler: {replies: [{text: "March", latency: 1ms}], then: repeat_last}
  writer: {replies: [{text: "the text", latency: 1ms}], then: repeat_last}
"#;

/// Builds scripted models from the `models:` section (as the CLI does).
struct Scripted;

impl ModelFactory for Scripted {
    fn build(
        &self,
        _alias: &str,
        spec: &ModelSpec,
        base_dir: &Path,
    ) -> Result<Arc<dyn baton_core::DynModel>, ModelBuildError> {
        let script = spec
            .script
            .as_ref()
            .map(|s| base_dir.join(&s.value))
            .unwrap();
        Ok(Arc::new(ScriptedModel::from_file(script).unwrap()))
    }

    fn defaults(&self, _spec: &ModelSpec) -> (Option<PriceSpec>, Option<u32>) {
        (None, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_workflows_and_cached_calls_beside_parallel_steps_never_hang_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("wf.yaml", PARENT),
        ("child.yaml", CHILD),
        ("script.yaml", SCRIPT),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let registry = Registry::new().model_factory(Arc::new(Scripted));
    let store = Arc::new(
        SqliteStore::open(dir.path().join("runs.db"), SqliteOptions::default())
            .await
            .unwrap(),
    );
    let runtime = Runtime::new(store).with_kill_switch(Duration::from_millis(1));
    for i in 0..40 {
        let wf = load_file(&dir.path().join("wf.yaml"), &registry).unwrap();
        let report = tokio::time::timeout(
            Duration::from_secs(20),
            runtime.run(wf, json!({"topic": format!("launch {i}")})),
        )
        .await
        .unwrap_or_else(|_| panic!("run {i} hung"))
        .unwrap();
        assert_eq!(report.status, RunStatus::Succeeded, "{report:?}");
        assert_eq!(
            report.outputs["part"],
            json!({"topic": format!("launch {i}"), "text": "the text"})
        );
        assert_eq!(report.outputs["dates"], "March");
    }
}
