//! Map / swarm (`swarm:`): the same agent over every item of a list with a concurrency limit,
//! the results gathered in item order, then a reducer (an agent, a subprocess or a registered
//! function) turns them into the step's output. See `docs/patterns/swarm.md`.
//!
//! ```yaml
//! - id: trends
//!   reads: [topics]
//!   swarm:
//!     over: topics
//!     as: topic
//!     agent: monitor
//!     prompt: "Report on {{ topic }}."
//!     concurrency: 8
//!     reduce:
//!       agent: analyst
//!       prompt: "Find the trends in {{ trends_results | tojson }}."
//!   output: trends
//! ```
//!
//! expands into `trends.map` (a map step writing `trends_results`) and `trends` (the reducer).

use super::Expansion;
use super::common::{self, Shape};
use crate::spec::{CommandSpec, Loc, MapSpec, MergeRule, OnItemError, StepSpec};
use serde::Deserialize;

/// The `swarm:` block of a step.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSpec {
    /// CEL expression over state giving the list.
    pub over: Loc<String>,
    /// Name of the item in the prompt (default `item`).
    #[serde(default, rename = "as")]
    pub item_name: Option<Loc<String>>,
    /// The agent run per item.
    pub agent: Loc<String>,
    /// Prompt template per item (over the step's `reads` and the item).
    pub prompt: Loc<String>,
    /// Items in flight at once (default 4).
    #[serde(default)]
    pub concurrency: Option<Loc<u32>>,
    /// What a failing item does: `fail` (default) or `skip` (its result is `null`).
    #[serde(default)]
    pub on_item_error: OnItemError,
    /// The state key receiving the gathered results (default `<step>_results`).
    #[serde(default)]
    pub results: Option<Loc<String>>,
    /// The reducer.
    pub reduce: Loc<ReduceSpec>,
}

/// The reducer of a swarm: exactly one of `agent` (with `prompt`), `run` or `function`.
#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReduceSpec {
    /// An agent reducing the results.
    #[serde(default)]
    pub agent: Option<Loc<String>>,
    /// Its prompt template (over the step's `reads` and the results key).
    #[serde(default)]
    pub prompt: Option<Loc<String>>,
    /// A subprocess speaking JSON (gets the results key in its `state`).
    #[serde(default)]
    pub run: Option<Loc<CommandSpec>>,
    /// A Rust function registered with the runtime.
    #[serde(default)]
    pub function: Option<Loc<String>>,
}

impl SwarmSpec {
    /// `agent` over the list `over` gives, `concurrency` at a time, reduced by `reduce`.
    pub fn new(
        over: &str,
        agent: &str,
        prompt: &str,
        concurrency: u32,
        reduce: ReduceSpec,
    ) -> Self {
        SwarmSpec {
            over: Loc::new(over.to_string()),
            item_name: None,
            agent: Loc::new(agent.to_string()),
            prompt: Loc::new(prompt.to_string()),
            concurrency: Some(Loc::new(concurrency)),
            on_item_error: OnItemError::Fail,
            results: None,
            reduce: Loc::new(reduce),
        }
    }

    /// The item's name in the prompt.
    pub fn item_name(mut self, name: &str) -> Self {
        self.item_name = Some(Loc::new(name.to_string()));
        self
    }

    /// The state key receiving the gathered results.
    pub fn results_key(mut self, key: &str) -> Self {
        self.results = Some(Loc::new(key.to_string()));
        self
    }

    /// Failing items give `null` instead of failing the swarm.
    pub fn skip_failed_items(mut self) -> Self {
        self.on_item_error = OnItemError::Skip;
        self
    }
}

impl ReduceSpec {
    /// An agent reducer.
    pub fn agent(agent: &str, prompt: &str) -> Self {
        ReduceSpec {
            agent: Some(Loc::new(agent.to_string())),
            prompt: Some(Loc::new(prompt.to_string())),
            ..ReduceSpec::default()
        }
    }

    /// A registered Rust function as the reducer.
    pub fn function(name: &str) -> Self {
        ReduceSpec {
            function: Some(Loc::new(name.to_string())),
            ..ReduceSpec::default()
        }
    }
}

/// Expand the `swarm:` block of `s` into a map step and a reducer.
pub fn expand_step(s: &StepSpec, x: &mut Expansion<'_>) {
    let Some(block) = &s.swarm else { return };
    let w = &block.value;
    let pos = block.pos;
    let id = s.id.value.as_str();
    let map_id = format!("{id}.map");
    let shape = Shape::Fan {
        entry: Some(&map_id),
    };
    let mut ok = common::check_fields(s, "swarm", shape, x);
    ok &= common::check_not_target(s, "swarm", shape, x);
    if common::agent(x, s, None, &w.agent, pos).is_none() {
        ok = false;
    }
    if let Some(c) = &w.concurrency
        && c.value < 1
    {
        x.err(c.pos.or(pos), id, "`concurrency` must be at least 1");
        ok = false;
    }
    let r = &w.reduce.value;
    let rpos = w.reduce.pos.or(pos);
    let kinds: Vec<&str> = [
        ("agent", r.agent.is_some()),
        ("run", r.run.is_some()),
        ("function", r.function.is_some()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| *k)
    .collect();
    if kinds.len() != 1 {
        x.err(
            rpos,
            id,
            if kinds.is_empty() {
                "`reduce` needs one of `agent` (with `prompt`), `run` or `function`".to_string()
            } else {
                format!("`reduce` has {}: give exactly one", kinds.join(" and "))
            },
        );
        ok = false;
    }
    match (&r.agent, &r.prompt) {
        (Some(a), None) => {
            x.err(
                a.pos.or(rpos),
                id,
                "the reducing agent needs a `prompt` (it can use the results key)",
            );
            ok = false;
        }
        (None, Some(p)) => {
            x.err(p.pos.or(rpos), id, "`prompt` goes with an `agent` reducer");
            ok = false;
        }
        (Some(a), Some(_)) => {
            if common::agent(x, s, None, a, rpos).is_none() {
                ok = false;
            }
        }
        (None, None) => {}
    }
    let sid = common::ident(id);
    let results = match &w.results {
        Some(k) => {
            if !common::is_ident(&k.value) {
                x.err(
                    k.pos.or(pos),
                    id,
                    format!(
                        "`results` names a state key used in templates: letters, digits and `_`, not `{}`",
                        k.value
                    ),
                );
                ok = false;
            }
            k.value.clone()
        }
        None => format!("{sid}_results"),
    };
    common::gen_key(
        x,
        s,
        shape,
        &results,
        MergeRule::Replace,
        &format!("The results of swarm `{id}`, in item order."),
        pos,
    );

    // Declared even when the block is wrong, so that readers of the keys add no errors.
    if !ok {
        x.steps.push(common::placeholder(s, shape));
        return;
    }

    let map = common::step(
        map_id.clone(),
        pos,
        format!("`{}` over every item of `{}`.", w.agent.value, w.over.value),
    );
    let mut map = common::first_step(s, common::limited(s, map), &results, pos);
    map.map = Some(MapSpec {
        over: w.over.clone(),
        item_name: w.item_name.clone(),
        agent: Some(w.agent.clone()),
        prompt: Some(w.prompt.clone()),
        run: None,
        function: None,
        concurrency: Some(w.concurrency.as_ref().map_or(4, |c| c.value)),
        on_item_error: w.on_item_error,
    });
    x.steps.push(map);

    let mut reduce = common::limited(s, common::exit_step(s, None));
    reduce.function = r.function.clone();
    reduce.agent = r.agent.clone();
    reduce.prompt = r.prompt.clone();
    reduce.run = r.run.clone();
    reduce.needs = common::keys(&[&map_id], pos);
    reduce.reads = common::reads_plus(s, &[&results], pos);
    x.steps.push(reduce);
}
