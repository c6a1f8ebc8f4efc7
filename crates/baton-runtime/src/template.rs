//! Prompt templates (minijinja), rendered over the state a step declares it reads.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The prompt templates of one workflow, compiled once.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// A template compile error: message and 1-based line within the template.
#[derive(Debug)]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// Line within the template.
    pub line: Option<u32>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        Templates { env }
    }

    /// Add a template; returns the variables it uses from its context.
    pub fn add(&mut self, name: String, source: String) -> Result<Vec<String>, TemplateError> {
        self.env
            .add_template_owned(name.clone(), source)
            .map_err(|e| TemplateError {
                message: e.detail().unwrap_or("syntax error").to_string(),
                line: e.line().map(|l| l as u32),
            })?;
        let t = self.env.get_template(&name).map_err(|e| TemplateError {
            message: e.to_string(),
            line: None,
        })?;
        let mut vars: Vec<String> = t.undeclared_variables(false).into_iter().collect();
        vars.sort();
        Ok(vars)
    }

    /// Render a template over a context.
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| format!("template `{name}`: {e}"))?;
        t.render(minijinja::value::Serde(ctx)).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(d) = e.detail()
                && !msg.contains(d)
            {
                msg.push_str(": ");
                msg.push_str(d);
            }
            msg
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_variables_and_renders() {
        let mut t = Templates::new();
        let vars = t
            .add("p".into(), "Score {{ lead.name }} for {{ region }}".into())
            .unwrap();
        assert_eq!(vars, ["lead", "region"]);
        let out = t
            .render("p", &json!({"lead": {"name": "Ada"}, "region": "EU"}))
            .unwrap();
        assert_eq!(out, "Score Ada for EU");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let mut t = Templates::new();
        let err = t.add("p".into(), "line one\n{{ oops ".into()).unwrap_err();
        assert_eq!(err.line, Some(2));
    }
}
