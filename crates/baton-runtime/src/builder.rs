//! Building workflows in Rust. The builder produces the same [`WorkflowSpec`] a YAML file does,
//! and compiles through the same validation, so both paths give one kind of [`Workflow`].
//!
//! ```
//! use baton_runtime::builder::{WorkflowBuilder, StepBuilder};
//! use baton_runtime::spec::MergeRule;
//! use baton_runtime::Registry;
//! use serde_json::json;
//!
//! let registry = Registry::new().function("one", |_| Ok(json!(1)));
//! let wf = WorkflowBuilder::new("count")
//!     .state("xs", MergeRule::Append)
//!     .step(StepBuilder::function("a", "one").output("xs"))
//!     .step(StepBuilder::function("b", "one").output("xs").needs(["a"]))
//!     .build(&registry)
//!     .expect("valid workflow");
//! assert_eq!(wf.step_names().collect::<Vec<_>>(), ["a", "b"]);
//! ```

use crate::error::WorkflowError;
use crate::registry::Registry;
use crate::spec::{
    AgentSpec, BranchSpec, DurationSpec, JoinMode, JoinSpec, KeySpec, Loc, MapSpec, MergeRule,
    NextSpec, OnTimeout, OneOrMany, StepSpec, WorkflowSpec,
};
use crate::workflow::Workflow;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn locs<I, S>(names: I) -> Vec<Loc<String>>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    names.into_iter().map(|n| Loc::new(n.into())).collect()
}

/// Builds a workflow in code.
#[derive(Clone, Debug, Default)]
pub struct WorkflowBuilder {
    spec: WorkflowSpec,
}

impl WorkflowBuilder {
    /// A workflow called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        WorkflowBuilder {
            spec: WorkflowSpec {
                name: Loc::new(name.into()),
                ..WorkflowSpec::default()
            },
        }
    }

    /// Declare a state key with a merge rule.
    pub fn state(self, key: impl Into<String>, rule: MergeRule) -> Self {
        self.state_with_default(key, rule, None)
    }

    /// Declare a state key with a merge rule and an initial value.
    pub fn state_with_default(
        mut self,
        key: impl Into<String>,
        rule: MergeRule,
        default: Option<Value>,
    ) -> Self {
        self.spec.state.0.push((
            Loc::new(key.into()),
            KeySpec {
                merge: rule,
                default,
                description: String::new(),
                untrusted: false,
            },
        ));
        self
    }

    /// Declare an agent.
    pub fn agent(mut self, name: impl Into<String>, agent: AgentSpec) -> Self {
        self.spec.agents.0.push((Loc::new(name.into()), agent));
        self
    }

    /// Add a step.
    pub fn step(mut self, step: StepBuilder) -> Self {
        self.spec.steps.push(step.spec);
        self
    }

    /// Name the entry steps explicitly.
    pub fn start<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.start = OneOrMany(locs(steps));
        self
    }

    /// Default bound on visits per step.
    pub fn max_visits(mut self, n: u32) -> Self {
        self.spec.defaults.max_visits = n;
        self
    }

    /// What the workflow does (documentation).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.spec.description = text.into();
        self
    }

    /// Declare a model alias. Agents pick one with `AgentSpec::model`; a model registered in
    /// the [`Registry`] under an alias can be used without declaring it here.
    pub fn model(mut self, alias: impl Into<String>, model: crate::spec::ModelSpec) -> Self {
        self.spec.models.0.push((Loc::new(alias.into()), model));
        self
    }

    /// The keys reported as the run's `outputs` (and returned by a sub-workflow).
    pub fn outputs<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.outputs = Some(locs(keys));
        self
    }

    /// Bound on sub-workflow nesting (`defaults.max_depth`).
    pub fn max_depth(mut self, n: u32) -> Self {
        self.spec.defaults.max_depth = n;
        self
    }

    /// The spec built so far.
    pub fn spec(&self) -> &WorkflowSpec {
        &self.spec
    }

    /// Validate and compile against a registry.
    pub fn build(self, registry: &Registry) -> Result<Arc<Workflow>, WorkflowError> {
        crate::loader::compile_spec(&self.spec, registry)
    }
}

/// Builds one step.
#[derive(Clone, Debug, Default)]
pub struct StepBuilder {
    spec: StepSpec,
}

impl StepBuilder {
    fn with_id(id: &str) -> StepSpec {
        StepSpec {
            id: Loc::new(id.to_string()),
            ..StepSpec::default()
        }
    }

    /// A step running a registered Rust function.
    pub fn function(id: &str, function: &str) -> Self {
        let mut spec = Self::with_id(id);
        spec.function = Some(Loc::new(function.to_string()));
        StepBuilder { spec }
    }

    /// A step running a subprocess speaking JSON.
    pub fn command<I, S>(id: &str, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut spec = Self::with_id(id);
        spec.run = Some(Loc::new(crate::spec::CommandSpec(
            argv.into_iter().map(Into::into).collect(),
        )));
        StepBuilder { spec }
    }

    /// An agent turn with a prompt template.
    pub fn agent(id: &str, agent: &str, prompt: &str) -> Self {
        let mut spec = Self::with_id(id);
        spec.agent = Some(Loc::new(agent.to_string()));
        spec.prompt = Some(Loc::new(prompt.to_string()));
        StepBuilder { spec }
    }

    /// An approval step: the run suspends until a human approves (or rejects) `message`.
    pub fn approval(id: &str, message: &str) -> Self {
        let mut spec = Self::with_id(id);
        spec.approval = Some(Loc::new(message.to_string()));
        StepBuilder { spec }
    }

    /// A step that does no work: a sync point for its needs.
    pub fn join(id: &str) -> Self {
        StepBuilder {
            spec: Self::with_id(id),
        }
    }

    /// A router: branches `(condition, target)`, first match wins; `None` always matches.
    pub fn router<I>(id: &str, branches: I) -> Self
    where
        I: IntoIterator<Item = (Option<&'static str>, &'static str)>,
    {
        let mut spec = Self::with_id(id);
        spec.router = Some(
            branches
                .into_iter()
                .map(|(when, to)| BranchSpec {
                    when: when.map(|w| Loc::new(w.to_string())),
                    to: OneOrMany(vec![Loc::new(to.to_string())]),
                })
                .collect(),
        );
        StepBuilder { spec }
    }

    /// A map of a registered function over the list a CEL expression gives.
    pub fn map_function(id: &str, over: &str, function: &str, concurrency: u32) -> Self {
        let mut spec = Self::with_id(id);
        spec.map = Some(MapSpec {
            over: Loc::new(over.to_string()),
            item_name: None,
            agent: None,
            prompt: None,
            run: None,
            function: Some(Loc::new(function.to_string())),
            concurrency: Some(concurrency),
            on_item_error: Default::default(),
        });
        StepBuilder { spec }
    }

    /// A debate: pro and contra agents argue for a bounded number of rounds, then an
    /// arbitrator decides (the same step as a `debate:` block in YAML; see
    /// `docs/patterns/debate.md`). Give it `reads` for the topic template and an `output`.
    pub fn debate(id: &str, debate: crate::patterns::debate::DebateSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.debate = Some(Loc::new(debate));
        StepBuilder { spec }
    }

    /// A reflection: a producer drafts, a verifier checks and sends the draft back with
    /// reasons until it passes or the bound is reached (the same step as a `reflect:` block;
    /// see `docs/patterns/reflect.md`).
    pub fn reflect(id: &str, reflect: crate::patterns::reflect::ReflectSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.reflect = Some(Loc::new(reflect));
        StepBuilder { spec }
    }

    /// A progressive refinement: passes that narrow the scope one after the other, ending
    /// early when a pass's `stop_when` holds (the same step as a `refine:` block; see
    /// `docs/patterns/refine.md`).
    pub fn refine(id: &str, refine: crate::patterns::refine::RefineSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.refine = Some(Loc::new(refine));
        StepBuilder { spec }
    }

    /// A consensus vote (the same step as a `vote:` block in YAML; see
    /// `docs/patterns/vote.md`). Give it `reads` for the prompt and an `output` for the
    /// accepted answer.
    pub fn vote(id: &str, vote: crate::patterns::vote::VoteSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.vote = Some(Loc::new(vote));
        StepBuilder { spec }
    }

    /// A confidence × authority weighted synthesis (the same step as a `synthesize:` block in
    /// YAML; see `docs/patterns/synthesize.md`). Give it an `output`.
    pub fn synthesize(id: &str, synthesis: crate::patterns::synthesize::SynthesizeSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.synthesize = Some(Loc::new(synthesis));
        StepBuilder { spec }
    }

    /// A best-of-n with a judge (the same step as a `best_of:` block in YAML; see
    /// `docs/patterns/best-of.md`). Give it `reads` for the prompt and an `output` for the
    /// winning candidate.
    pub fn best_of(id: &str, best_of: crate::patterns::best_of::BestOfSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.best_of = Some(Loc::new(best_of));
        StepBuilder { spec }
    }

    /// A swarm: one agent over every item of a list, then a reducer (the same step as a
    /// `swarm:` block in YAML; see `docs/patterns/swarm.md`). Give it `reads` for the prompts
    /// and an `output` for the reducer's result.
    pub fn swarm(id: &str, swarm: crate::patterns::swarm::SwarmSpec) -> Self {
        let mut spec = Self::with_id(id);
        spec.swarm = Some(Loc::new(swarm));
        StepBuilder { spec }
    }

    /// Steps that must complete first.
    pub fn needs<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.needs = OneOrMany(locs(steps));
        self
    }

    /// Wait for `quorum` of the needs (or all, or any), at most `timeout`.
    pub fn join_mode(
        mut self,
        mode: JoinMode,
        quorum: Option<u32>,
        timeout: Option<Duration>,
        on_timeout: OnTimeout,
    ) -> Self {
        self.spec.join = Some(Loc::new(JoinSpec {
            mode,
            quorum: quorum.map(Loc::new),
            timeout: timeout.map(DurationSpec),
            on_timeout,
        }));
        self
    }

    /// State keys the step reads.
    pub fn reads<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.reads = OneOrMany(locs(keys));
        self
    }

    /// The key receiving the whole output.
    pub fn output(mut self, key: &str) -> Self {
        self.spec.output = Some(Loc::new(key.to_string()));
        self
    }

    /// Keys receiving the fields of an object output.
    pub fn writes<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.writes = OneOrMany(locs(keys));
        self
    }

    /// Go to `target` on completion.
    pub fn next(self, target: &str) -> Self {
        self.next_when(None, target)
    }

    /// Add a conditional transition (branches are tried in the order added).
    pub fn next_when(mut self, when: Option<&str>, target: &str) -> Self {
        let branch = BranchSpec {
            when: when.map(|w| Loc::new(w.to_string())),
            to: OneOrMany(vec![Loc::new(target.to_string())]),
        };
        match &mut self.spec.next {
            Some(NextSpec(list)) => list.push(branch),
            None => self.spec.next = Some(NextSpec(vec![branch])),
        }
        self
    }

    /// `fail`, `continue`, or a step to route to on failure.
    pub fn on_error(mut self, policy: &str) -> Self {
        self.spec.on_error = Some(Loc::new(policy.to_string()));
        self
    }

    /// Run again this many times on failure before `on_error` applies.
    pub fn retries(mut self, n: u32) -> Self {
        self.spec.retries = Some(n);
        self
    }

    /// Bound on visits.
    pub fn max_visits(mut self, n: u32) -> Self {
        self.spec.max_visits = Some(n);
        self
    }

    /// What is lost if the step fails.
    pub fn impact(mut self, text: &str) -> Self {
        self.spec.impact = Some(text.to_string());
        self
    }

    /// A sub-workflow step: runs the workflow file at `path` as a child run and takes its
    /// `outputs` as the step's output. A relative path resolves against the current directory
    /// (for a built workflow) or the parent file's directory.
    pub fn workflow(id: &str, path: &str) -> Self {
        let mut spec = Self::with_id(id);
        spec.workflow = Some(Loc::new(path.to_string()));
        StepBuilder { spec }
    }

    /// For a sub-workflow step: the child's state key `key` starts with the value of the CEL
    /// expression `expr`, evaluated over this workflow's state when the step starts.
    pub fn input(mut self, key: &str, expr: &str) -> Self {
        self.spec
            .input
            .0
            .push((Loc::new(key.to_string()), Loc::new(expr.to_string())));
        self
    }

    /// Add a router branch (tried in the order added): when `when` holds (`None`: always),
    /// trigger every step of `targets` at once. Makes the step a router if it is not one.
    pub fn branch<I, S>(mut self, when: Option<&str>, targets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let branch = BranchSpec {
            when: when.map(|w| Loc::new(w.to_string())),
            to: OneOrMany(locs(targets)),
        };
        self.spec.router.get_or_insert_with(Vec::new).push(branch);
        self
    }

    /// What the step does (documentation).
    pub fn description(mut self, text: &str) -> Self {
        self.spec.description = text.to_string();
        self
    }
}
