//! The shared state (blackboard) and its merge rules. Pure: no I/O, no clocks.
//!
//! Determinism: every write is tagged with the round its step started in and the step's index.
//! Writes are ordered by that tag, never by completion time, so a run's final state does not
//! depend on which of two parallel steps finished first:
//! - `replace` keeps the write with the highest tag; two writes from different steps of one
//!   round are an error that names both steps;
//! - `append` places each write's items in tag order;
//! - `merge` keeps, per entry, the write with the highest tag;
//! - `sum` and `max` commute.

use crate::spec::MergeRule;
use crate::workflow::KeyDef;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Who wrote: (round, step index). Input and defaults are (0, 0).
pub type Tag = (u32, u32);

#[derive(Clone, Debug, PartialEq)]
enum Meta {
    Replace(Option<Tag>),
    /// Segments of the list in order: (tag, number of items).
    Append(Vec<(Tag, usize)>),
    Merge(HashMap<String, Tag>),
    Plain,
}

/// The values of a run's state keys.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    values: Vec<Arc<Value>>,
    meta: Vec<Meta>,
}

/// A write that cannot be merged.
#[derive(Debug, PartialEq)]
pub enum MergeError {
    /// Another step of the same round already wrote this replace key.
    Conflict {
        /// The other step's index.
        other_step: u32,
    },
    /// The value does not fit the key's rule.
    Type(String),
}

impl State {
    /// Initial state: every key at its default.
    pub fn new(keys: &[KeyDef]) -> Self {
        State {
            values: keys.iter().map(|k| Arc::new(k.initial.clone())).collect(),
            meta: keys
                .iter()
                .map(|k| match k.rule {
                    MergeRule::Replace => Meta::Replace(None),
                    MergeRule::Append => {
                        let n = k.initial.as_array().map_or(0, Vec::len);
                        Meta::Append(if n > 0 { vec![((0, 0), n)] } else { Vec::new() })
                    }
                    MergeRule::Merge => Meta::Merge(HashMap::new()),
                    MergeRule::Sum | MergeRule::Max => Meta::Plain,
                })
                .collect(),
        }
    }

    /// The value of key `k`.
    pub fn get(&self, k: usize) -> &Arc<Value> {
        &self.values[k]
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Set a key from the run's input (before any step runs).
    pub fn set_input(&mut self, k: usize, value: Value) {
        if let Meta::Append(segs) = &mut self.meta[k] {
            segs.clear();
            let n = value.as_array().map_or(1, Vec::len);
            if n > 0 {
                segs.push(((0, 0), n));
            }
        }
        self.values[k] = Arc::new(value);
    }

    /// Check that `value` can be merged into key `k` by `tag`.
    pub fn check(
        &self,
        k: usize,
        rule: MergeRule,
        value: &Value,
        tag: Tag,
    ) -> Result<(), MergeError> {
        match (&self.meta[k], rule) {
            (Meta::Replace(Some(prev)), _) if prev.0 == tag.0 && prev.1 != tag.1 => {
                Err(MergeError::Conflict { other_step: prev.1 })
            }
            (_, MergeRule::Merge) if !value.is_object() => Err(MergeError::Type(format!(
                "needs an object for merge key, got {}",
                crate::expr::type_name(value)
            ))),
            (_, MergeRule::Sum | MergeRule::Max) if !value.is_number() => {
                Err(MergeError::Type(format!(
                    "needs a number for a `{}` key, got {}",
                    rule.as_str(),
                    crate::expr::type_name(value)
                )))
            }
            _ => Ok(()),
        }
    }

    /// Merge `value` into key `k`. Values that fail [`State::check`] are ignored here; callers
    /// check first (the log never holds such a write).
    pub fn apply(&mut self, k: usize, rule: MergeRule, value: Value, tag: Tag) {
        match (&mut self.meta[k], rule) {
            (Meta::Replace(prev), _) => {
                if prev.is_none_or(|p| p <= tag) {
                    *prev = Some(tag);
                    self.values[k] = Arc::new(value);
                }
            }
            (Meta::Append(segs), _) => {
                let items = match value {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                if items.is_empty() {
                    return;
                }
                let n = items.len();
                // Position: after every segment whose tag is <= ours.
                let at_end = segs.last().is_none_or(|(t, _)| *t <= tag);
                let list = Arc::make_mut(&mut self.values[k]);
                if !list.is_array() {
                    *list = Value::Array(Vec::new());
                }
                let Value::Array(arr) = list else { return };
                if at_end {
                    arr.extend(items);
                    segs.push((tag, n));
                } else {
                    let idx = segs.partition_point(|(t, _)| *t <= tag);
                    let pos: usize = segs[..idx].iter().map(|(_, n)| n).sum();
                    arr.splice(pos..pos, items);
                    segs.insert(idx, (tag, n));
                }
            }
            (Meta::Merge(writers), _) => {
                let Value::Object(incoming) = value else {
                    return;
                };
                let target = Arc::make_mut(&mut self.values[k]);
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                let Value::Object(map) = target else { return };
                for (ek, ev) in incoming {
                    let newer = writers.get(&ek).is_none_or(|t| *t <= tag);
                    if newer {
                        writers.insert(ek.clone(), tag);
                        map.insert(ek, ev);
                    }
                }
            }
            (Meta::Plain, MergeRule::Sum) => {
                let cur = &self.values[k];
                let next = match (cur.as_i64(), value.as_i64()) {
                    (Some(a), Some(b)) => a.checked_add(b).map(Value::from),
                    _ => None,
                }
                .unwrap_or_else(|| {
                    let s = cur.as_f64().unwrap_or(0.0) + value.as_f64().unwrap_or(0.0);
                    serde_json::Number::from_f64(s).map_or(Value::Null, Value::Number)
                });
                self.values[k] = Arc::new(next);
            }
            (Meta::Plain, _) => {
                let cur = &self.values[k];
                let bigger = match (cur.as_f64(), value.as_f64()) {
                    (Some(a), Some(b)) => b > a,
                    (None, Some(_)) => true,
                    _ => false,
                };
                if bigger {
                    self.values[k] = Arc::new(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn key(rule: MergeRule, initial: Value) -> KeyDef {
        KeyDef {
            name: "k".into(),
            rule,
            initial,
            untrusted: false,
        }
    }

    #[test]
    fn append_orders_by_tag_not_arrival() {
        let keys = [key(MergeRule::Append, json!([]))];
        let mut a = State::new(&keys);
        let mut b = State::new(&keys);
        a.apply(0, MergeRule::Append, json!(["x"]), (1, 0));
        a.apply(0, MergeRule::Append, json!(["y1", "y2"]), (1, 3));
        a.apply(0, MergeRule::Append, json!("z"), (2, 1));
        b.apply(0, MergeRule::Append, json!("z"), (2, 1));
        b.apply(0, MergeRule::Append, json!(["y1", "y2"]), (1, 3));
        b.apply(0, MergeRule::Append, json!(["x"]), (1, 0));
        assert_eq!(**a.get(0), json!(["x", "y1", "y2", "z"]));
        assert_eq!(a, b);
    }

    #[test]
    fn replace_conflict_in_one_round() {
        let keys = [key(MergeRule::Replace, Value::Null)];
        let mut s = State::new(&keys);
        s.check(0, MergeRule::Replace, &json!(1), (1, 2)).unwrap();
        s.apply(0, MergeRule::Replace, json!(1), (1, 2));
        assert_eq!(
            s.check(0, MergeRule::Replace, &json!(2), (1, 5)),
            Err(MergeError::Conflict { other_step: 2 })
        );
        s.check(0, MergeRule::Replace, &json!(2), (2, 5)).unwrap();
    }

    #[test]
    fn merge_keeps_highest_tag_per_entry() {
        let keys = [key(MergeRule::Merge, json!({"a": 0, "b": 0}))];
        let mut s = State::new(&keys);
        s.apply(0, MergeRule::Merge, json!({"a": 2}), (2, 0));
        s.apply(0, MergeRule::Merge, json!({"a": 1, "b": 1}), (1, 0));
        assert_eq!(**s.get(0), json!({"a": 2, "b": 1}));
    }

    #[test]
    fn sum_and_max() {
        let keys = [
            key(MergeRule::Sum, json!(0)),
            key(MergeRule::Max, Value::Null),
        ];
        let mut s = State::new(&keys);
        s.apply(0, MergeRule::Sum, json!(2), (1, 0));
        s.apply(0, MergeRule::Sum, json!(3), (1, 1));
        s.apply(1, MergeRule::Max, json!(5), (1, 0));
        s.apply(1, MergeRule::Max, json!(4), (1, 1));
        assert_eq!(**s.get(0), json!(5));
        assert_eq!(**s.get(1), json!(5));
        assert!(s.check(0, MergeRule::Sum, &json!("x"), (1, 0)).is_err());
    }
}
