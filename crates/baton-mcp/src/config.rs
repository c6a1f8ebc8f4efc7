//! How to reach an MCP server.

use baton_core::SideEffect;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The separator between the server's name and the tool's name in a baton tool name:
/// the tool `echo` of the server `everything` becomes `everything__echo`.
///
/// Model APIs accept tool names matching `^[a-zA-Z0-9_-]{1,64}$`, so a dot or a slash is not
/// an option.
pub const SEPARATOR: &str = "__";

/// The longest tool name model APIs accept.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// Default per-call timeout: 60 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default bound on starting a server, the handshake and listing its tools: 30 s.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The variables of baton's environment a stdio server inherits unless configured to inherit
/// all of them: what a program needs to find things and behave, and no secrets. (MCP's
/// reference SDKs inherit `HOME`, `LOGNAME`, `PATH`, `SHELL`, `TERM` and `USER` the same way.)
pub const INHERITED_ENV_VARS: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR",
    "TZ",
];

/// One MCP server: its name, how to reach it, and how long to wait for it.
///
/// ```
/// use baton_mcp::McpServerConfig;
/// use std::time::Duration;
///
/// let fs = McpServerConfig::stdio("fs", ["npx", "-y", "@modelcontextprotocol/server-filesystem", "."])
///     .with_env("NODE_OPTIONS", "--max-old-space-size=256")
///     .with_timeout(Duration::from_secs(10));
/// let remote = McpServerConfig::http("search", "https://mcp.example.com/mcp")
///     .with_header("Authorization", "Bearer s3cret");
/// assert_eq!(fs.name, "fs");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerConfig {
    /// The server's name; its tools are called `<name>__<tool>` in baton. Must match
    /// `^[a-zA-Z0-9_-]+$` and leave room for tool names within 64 characters.
    pub name: String,
    /// How to reach the server.
    pub transport: McpTransport,
    /// Default timeout of one tool call (see [`McpTool::with_timeout`](crate::McpTool::with_timeout)
    /// to change it per tool). Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Bound on starting the server, the MCP handshake and listing its tools.
    /// Default: [`DEFAULT_STARTUP_TIMEOUT`].
    pub startup_timeout: Duration,
    /// Side-effect classes that replace the one derived from a tool's annotations, keyed by the
    /// server's own (unprefixed) tool name.
    pub effects: BTreeMap<String, SideEffect>,
}

/// The transport to an MCP server.
#[derive(Clone, Debug, PartialEq)]
pub enum McpTransport {
    /// A local program speaking MCP on its stdin and stdout.
    Stdio {
        /// The program and its arguments.
        command: Vec<String>,
        /// Environment variables set for the program, over the inherited ones.
        env: BTreeMap<String, String>,
        /// Whether the program inherits baton's whole environment. When false (the default),
        /// it inherits only [`INHERITED_ENV_VARS`], so that API keys and other secrets in
        /// baton's environment do not reach a third-party server unless passed in `env`.
        inherit_env: bool,
        /// The working directory; default: the current one.
        cwd: Option<PathBuf>,
    },
    /// A server speaking MCP's streamable HTTP transport.
    Http {
        /// The endpoint, for example `http://127.0.0.1:3001/mcp`.
        url: String,
        /// Headers sent with every request (for example `Authorization`).
        headers: BTreeMap<String, String>,
    },
}

impl McpServerConfig {
    fn new(name: impl Into<String>, transport: McpTransport) -> Self {
        McpServerConfig {
            name: name.into(),
            transport,
            timeout: DEFAULT_TIMEOUT,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            effects: BTreeMap::new(),
        }
    }

    /// A server run as a local program (program, then arguments) speaking MCP over stdio.
    pub fn stdio<I, S>(name: impl Into<String>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            name,
            McpTransport::Stdio {
                command: command.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                inherit_env: false,
                cwd: None,
            },
        )
    }

    /// A server reached over MCP's streamable HTTP transport at `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(
            name,
            McpTransport::Http {
                url: url.into(),
                headers: BTreeMap::new(),
            },
        )
    }

    /// Sets an environment variable of a stdio server (ignored for HTTP).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Stdio { env, .. } = &mut self.transport {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Lets a stdio server inherit baton's whole environment, not just [`INHERITED_ENV_VARS`]
    /// (ignored for HTTP).
    pub fn with_inherited_env(mut self, inherit: bool) -> Self {
        if let McpTransport::Stdio { inherit_env, .. } = &mut self.transport {
            *inherit_env = inherit;
        }
        self
    }

    /// Sets the working directory of a stdio server (ignored for HTTP).
    pub fn with_cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        if let McpTransport::Stdio { cwd, .. } = &mut self.transport {
            *cwd = Some(dir.into());
        }
        self
    }

    /// Adds a header sent to an HTTP server (ignored for stdio).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Http { headers, .. } = &mut self.transport {
            headers.insert(name.into(), value.into());
        }
        self
    }

    /// Sets the default per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on start-up, handshake and tool listing.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Pins the side-effect class of the server's tool `tool` (its own, unprefixed name),
    /// whatever its annotations say.
    pub fn with_effect(mut self, tool: impl Into<String>, effect: SideEffect) -> Self {
        self.effects.insert(tool.into(), effect);
        self
    }

    /// Checks the name and the transport; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the server name is empty".into());
        }
        if !self.name.chars().all(is_name_char) {
            return Err(format!(
                "the server name `{}` may only contain ASCII letters, digits, `_` and `-`",
                self.name
            ));
        }
        // Leave room for the separator and a tool name of at least a few characters.
        if self.name.len() + SEPARATOR.len() + 8 > MAX_TOOL_NAME_LEN {
            return Err(format!(
                "the server name `{}` is too long: at most {} characters, so that `{}{}<tool>` \
                 fits in {MAX_TOOL_NAME_LEN}",
                self.name,
                MAX_TOOL_NAME_LEN - SEPARATOR.len() - 8,
                self.name,
                SEPARATOR,
            ));
        }
        if self.timeout.is_zero() {
            return Err("the timeout is zero".into());
        }
        if self.startup_timeout.is_zero() {
            return Err("the startup timeout is zero".into());
        }
        match &self.transport {
            McpTransport::Stdio { command, .. } => {
                if command.first().is_none_or(|p| p.is_empty()) {
                    return Err("the command is empty".into());
                }
            }
            McpTransport::Http { url, headers } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("the url `{url}` is not an http:// or https:// URL"));
                }
                for (name, value) in headers {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("`{name}` is not a valid HTTP header name"));
                    }
                    if http::HeaderValue::from_str(value).is_err() {
                        return Err(format!("the value of header `{name}` is not valid"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `c` may appear in a baton tool name.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The baton name of the tool `tool` of the server `server`: `server__tool`.
///
/// Characters that model APIs reject in tool names (anything but ASCII letters, digits, `_`
/// and `-`; MCP also allows `.` and `/`) become `_`. The result may be longer than
/// [`MAX_TOOL_NAME_LEN`]; [`McpClient`](crate::McpClient) skips such tools.
pub fn tool_name(server: &str, tool: &str) -> String {
    let mut name = String::with_capacity(server.len() + SEPARATOR.len() + tool.len());
    name.push_str(server);
    name.push_str(SEPARATOR);
    name.extend(tool.chars().map(|c| if is_name_char(c) { c } else { '_' }));
    name
}

/// Whether a tool name matches a pattern from an agent's `tools:` list: the exact name, or
/// `server__*` for every tool of `server`.
///
/// ```
/// assert!(baton_mcp::pattern_matches("fs__*", "fs__read_file"));
/// assert!(baton_mcp::pattern_matches("fs__read_file", "fs__read_file"));
/// assert!(!baton_mcp::pattern_matches("fs__*", "fsx__read_file"));
/// ```
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(SEPARATOR) => {
            name.starts_with(prefix) && name.len() > prefix.len()
        }
        _ => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_sanitised() {
        assert_eq!(tool_name("everything", "get-sum"), "everything__get-sum");
        assert_eq!(tool_name("gh", "repos/list.all"), "gh__repos_list_all");
        assert_eq!(tool_name("s", "é"), "s___");
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("a__*", "a__b"));
        assert!(!pattern_matches("a__*", "a__"));
        assert!(!pattern_matches("a__*", "ab__c"));
        assert!(pattern_matches("a__b", "a__b"));
        assert!(!pattern_matches("a*", "ab"));
    }

    #[test]
    fn validation() {
        assert!(
            McpServerConfig::stdio("ok-name_1", ["x"])
                .validate()
                .is_ok()
        );
        let err = McpServerConfig::stdio("a.b", ["x"]).validate().unwrap_err();
        assert!(err.contains("may only contain"), "{err}");
        let err = McpServerConfig::stdio("a", Vec::<String>::new())
            .validate()
            .unwrap_err();
        assert!(err.contains("command is empty"), "{err}");
        let err = McpServerConfig::http("a", "ftp://x")
            .validate()
            .unwrap_err();
        assert!(err.contains("not an http"), "{err}");
        let err = McpServerConfig::http("a", "http://x")
            .with_header("bad header", "v")
            .validate()
            .unwrap_err();
        assert!(err.contains("header name"), "{err}");
        let long = "x".repeat(60);
        assert!(McpServerConfig::stdio(long, ["x"]).validate().is_err());
        let err = McpServerConfig::stdio("a", ["x"])
            .with_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.contains("timeout"), "{err}");
    }
}
