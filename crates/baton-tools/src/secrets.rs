//! Secrets: referenced by name, resolved only inside a tool call.
//!
//! A workflow never holds a secret's value. It names the secrets it may use (`secrets:
//! [API_TOKEN]`) and writes `{{secret.API_TOKEN}}` where a value is needed (an HTTP header, an
//! environment variable, a tool argument). The placeholder is what the model sees, what is
//! validated against a schema and what is journaled in events; a tool replaces it with the value
//! from a [`SecretStore`] at the moment it runs, and [`redact`]s every value it used out of its
//! result and errors before returning them.
//!
//! - [`Secret`]: a value whose `Debug` and `Display` print `***`.
//! - [`SecretStore`]: where values come from: [`EnvSecrets`] (environment variables,
//!   `BATON_SECRET_<NAME>` or an explicit mapping), [`MemorySecrets`] (tests, embedding), and
//!   [`ScopedSecrets`] (only the names a workflow declared).
//! - [`SecretResolver`]: substitutes placeholders in strings, maps and JSON values and remembers
//!   which secrets it used, for [`redact`] / [`redact_value`].

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A secret value. `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The name the brief and other crates use for a secret value.
pub type SecretString = Secret;

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Call this only where the value is handed to the outside world (a header
    /// on the wire, a child's environment), never to build something that is logged or returned.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

/// Where secret values come from.
pub trait SecretStore: Send + Sync {
    /// The value of the secret `name`, if this store has it.
    fn get(&self, name: &str) -> Option<Secret>;

    /// A hint on how to provide `name` when it is missing (for example the environment variable
    /// to set). Never contains a value.
    fn hint(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
}

impl<S: SecretStore + ?Sized> SecretStore for Arc<S> {
    fn get(&self, name: &str) -> Option<Secret> {
        (**self).get(name)
    }
    fn hint(&self, name: &str) -> Option<String> {
        (**self).hint(name)
    }
}

impl<S: SecretStore + ?Sized> SecretStore for &S {
    fn get(&self, name: &str) -> Option<Secret> {
        (**self).get(name)
    }
    fn hint(&self, name: &str) -> Option<String> {
        (**self).hint(name)
    }
}

/// Secrets read from environment variables when they are needed.
///
/// A secret `NAME` is read from the variable mapped to it with [`EnvSecrets::map`], or else from
/// `<prefix><NAME>` (prefix `BATON_SECRET_` by default; the name is used as written, so
/// `API_TOKEN` is `BATON_SECRET_API_TOKEN`). Names must be `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Clone, Debug)]
pub struct EnvSecrets {
    prefix: String,
    mapping: HashMap<String, String>,
}

impl Default for EnvSecrets {
    fn default() -> Self {
        Self::new()
    }
}

impl EnvSecrets {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "BATON_SECRET_";

    /// Secrets from `BATON_SECRET_<NAME>`.
    pub fn new() -> Self {
        EnvSecrets {
            prefix: Self::DEFAULT_PREFIX.to_string(),
            mapping: HashMap::new(),
        }
    }

    /// Secrets from `<prefix><NAME>`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        EnvSecrets {
            prefix: prefix.into(),
            mapping: HashMap::new(),
        }
    }

    /// Read the secret `name` from the variable `var` instead.
    pub fn map(mut self, name: impl Into<String>, var: impl Into<String>) -> Self {
        self.mapping.insert(name.into(), var.into());
        self
    }

    /// The environment variable the secret `name` is read from.
    pub fn var_for(&self, name: &str) -> String {
        match self.mapping.get(name) {
            Some(var) => var.clone(),
            None => format!("{}{name}", self.prefix),
        }
    }
}

impl SecretStore for EnvSecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        if !valid_name(name) {
            return None;
        }
        std::env::var(self.var_for(name)).ok().map(Secret)
    }

    fn hint(&self, name: &str) -> Option<String> {
        Some(format!(
            "set the environment variable {}",
            self.var_for(name)
        ))
    }
}

/// Secrets held in memory (tests, or a host application that fetched them itself).
#[derive(Clone, Debug, Default)]
pub struct MemorySecrets {
    values: HashMap<String, Secret>,
}

impl MemorySecrets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a secret.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Secret>) {
        self.values.insert(name.into(), value.into());
    }

    /// The store with one more secret.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.insert(name, value);
        self
    }
}

impl<N: Into<String>, V: Into<Secret>> FromIterator<(N, V)> for MemorySecrets {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        MemorySecrets {
            values: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

impl SecretStore for MemorySecrets {
    fn get(&self, name: &str) -> Option<Secret> {
        self.values.get(name).cloned()
    }
}

/// Another store, limited to the names a workflow declared (`secrets: [API_TOKEN]`): any other
/// name is unknown, whatever the inner store holds.
#[derive(Clone, Debug)]
pub struct ScopedSecrets<S> {
    inner: S,
    allowed: HashSet<String>,
}

impl<S: SecretStore> ScopedSecrets<S> {
    /// `inner`, limited to `names`.
    pub fn new<I, N>(inner: S, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        ScopedSecrets {
            inner,
            allowed: names.into_iter().map(Into::into).collect(),
        }
    }
}

impl<S: SecretStore> SecretStore for ScopedSecrets<S> {
    fn get(&self, name: &str) -> Option<Secret> {
        if self.allowed.contains(name) {
            self.inner.get(name)
        } else {
            None
        }
    }

    fn hint(&self, name: &str) -> Option<String> {
        if self.allowed.contains(name) {
            self.inner.hint(name)
        } else {
            Some("the workflow does not declare it under `secrets:`".to_string())
        }
    }
}

/// Why placeholders could not be resolved. Messages name secrets, never their values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The store has no secret of that name.
    #[error("unknown secret `{name}`{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Unknown {
        /// The secret's name.
        name: String,
        /// How to provide it, if the store knows.
        hint: Option<String>,
    },
    /// A placeholder is malformed (unterminated, or a bad name).
    #[error("malformed secret placeholder: {message}")]
    Malformed {
        /// What is wrong.
        message: String,
    },
}

/// Whether `name` is a valid secret name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One piece of a string with placeholders.
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

/// Split `text` into literal text and `{{secret.NAME}}` placeholders (spaces inside the braces
/// are allowed). Other `{{...}}` are left alone as text.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, SecretError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let trimmed = after.trim_start();
        if !trimmed.starts_with("secret.") {
            // Not ours: keep `{{` as text and go on after it.
            out.push(Piece::Text(&rest[..open + 2]));
            rest = after;
            continue;
        }
        let Some(close) = after.find("}}") else {
            return Err(SecretError::Malformed {
                message: format!(
                    "`{{{{ secret.` at byte {} is not closed with `}}}}`",
                    text.len() - rest.len() + open
                ),
            });
        };
        let inner = after[..close].trim();
        let name = inner.strip_prefix("secret.").unwrap_or(inner);
        if !valid_name(name) {
            return Err(SecretError::Malformed {
                message: format!(
                    "`{{{{{inner}}}}}`: a secret name must match [A-Za-z_][A-Za-z0-9_]*"
                ),
            });
        }
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        out.push(Piece::Secret(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The names of the secrets `text` refers to, in order of first use (for checking a workflow's
/// references against its declared `secrets:` when it is loaded).
pub fn placeholder_names(text: &str) -> Result<Vec<String>, SecretError> {
    let mut names: Vec<String> = Vec::new();
    for piece in pieces(text)? {
        if let Piece::Secret(name) = piece
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Whether `text` contains a `{{secret.…}}` placeholder (well-formed or not).
pub fn has_placeholder(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        rest = &rest[open + 2..];
        if rest.trim_start().starts_with("secret.") {
            return true;
        }
    }
    false
}

/// Substitutes `{{secret.NAME}}` placeholders with values from a store, and remembers every
/// value it substituted so that they can be [`redact`]ed from what the tool returns.
pub struct SecretResolver<'a> {
    store: Option<&'a dyn SecretStore>,
    used: Vec<Secret>,
}

impl fmt::Debug for SecretResolver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretResolver")
            .field("has_store", &self.store.is_some())
            .field("used", &self.used.len())
            .finish()
    }
}

impl<'a> SecretResolver<'a> {
    /// A resolver reading from `store`; with `None`, any placeholder is an unknown secret.
    pub fn new(store: Option<&'a dyn SecretStore>) -> Self {
        SecretResolver {
            store,
            used: Vec::new(),
        }
    }

    /// `text` with its placeholders replaced.
    pub fn resolve_str(&mut self, text: &str) -> Result<String, SecretError> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        for piece in pieces(text)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Secret(name) => {
                    let secret = self.lookup(name)?;
                    out.push_str(secret.expose());
                    if !self.used.contains(&secret) {
                        self.used.push(secret);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every value of `map` resolved (keys are left as they are).
    pub fn resolve_map<K: Clone + Ord>(
        &mut self,
        map: &BTreeMap<K, String>,
    ) -> Result<BTreeMap<K, String>, SecretError> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.resolve_str(v)?)))
            .collect()
    }

    /// Every string inside `value` resolved (object keys are left as they are).
    pub fn resolve_value(&mut self, value: &Value) -> Result<Value, SecretError> {
        Ok(match value {
            Value::String(s) => Value::String(self.resolve_str(s)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve_value(v)?)))
                    .collect::<Result<_, SecretError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The secrets substituted so far.
    pub fn used(&self) -> &[Secret] {
        &self.used
    }

    /// `text` with every secret substituted so far replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.used)
    }

    fn lookup(&self, name: &str) -> Result<Secret, SecretError> {
        let unknown = || SecretError::Unknown {
            name: name.to_string(),
            hint: match self.store {
                Some(store) => store.hint(name),
                None => Some("no secret store is configured for this tool".to_string()),
            },
        };
        self.store.and_then(|s| s.get(name)).ok_or_else(unknown)
    }
}

/// `text` with placeholders replaced by values from `store`.
pub fn resolve_placeholders(text: &str, store: &dyn SecretStore) -> Result<String, SecretError> {
    SecretResolver::new(Some(store)).resolve_str(text)
}

/// The redaction marker.
pub const REDACTED: &str = "***";

/// `text` with every occurrence of any of `secrets`' values replaced by `***` (longer values
/// first, so a value containing another is redacted whole). Empty values are ignored.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut values: Vec<&str> = secrets
        .iter()
        .map(Secret::expose)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return text.to_string();
    }
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for value in values {
        if out.contains(value) {
            out = out.replace(value, REDACTED);
        }
    }
    out
}

/// `value` with every string (and object key) passed through [`redact`].
pub fn redact_value(value: &Value, secrets: &[Secret]) -> Value {
    if secrets.iter().all(|s| s.expose().is_empty()) {
        return value.clone();
    }
    match value {
        Value::String(s) => Value::String(redact(s, secrets)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| redact_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (redact(k, secrets), redact_value(v, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}
