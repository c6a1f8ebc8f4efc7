//! `http_get`: HTTP GET limited to an allow-list of hosts.

use super::{chain, failed, invalid, truncate_utf8};
use crate::secrets::{SecretResolver, SecretStore, has_placeholder, redact, redact_value};
use baton_core::{SideEffect, Tool, ToolContext, ToolError, ToolSpec};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The tool's name.
pub const HTTP_GET: &str = "http_get";

/// Request headers a caller may not set: they would change where or how the request goes.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "expect",
];

/// Why a fetch stopped.
enum FetchError {
    /// Refused or failed, with a message for [`ToolError::Failed`].
    Refused(String),
    /// Already a tool error (a timeout).
    Tool(ToolError),
}

/// Configuration of [`HttpGetTool`].
#[derive(Clone, Debug)]
pub struct HttpGetConfig {
    /// Hosts that may be fetched: an exact host (`api.example.com`, `127.0.0.1`, `::1`) or a
    /// wildcard for subdomains (`*.example.com`, which does not match `example.com` itself).
    /// Matching ignores case and a trailing dot; ports are not restricted.
    pub allow_hosts: Vec<String>,
    /// Time limit for the whole call, redirects and body included (default 30 s).
    pub timeout: Duration,
    /// Largest body returned, in bytes (default 1 MiB); a longer body is cut and flagged.
    pub max_bytes: usize,
    /// Whether plain `http://` URLs are allowed (default false: only `https://`).
    pub allow_http: bool,
    /// Redirects followed at most (default 5); each hop is checked like the first URL.
    pub max_redirects: usize,
    /// Headers sent with every request to any allowed host, set by whoever configures the tool
    /// (not the model). Values may contain `{{secret.NAME}}` placeholders, resolved at call
    /// time. For credentials, prefer [`HttpGetConfig::host_headers`].
    pub headers: BTreeMap<String, String>,
    /// Headers sent only to hosts matching the key (written like an allow-list entry:
    /// `api.example.com` or `*.example.com`), for example
    /// `{"api.example.com": {"Authorization": "Bearer {{secret.API_TOKEN}}"}}`. They win over
    /// [`HttpGetConfig::headers`], which win over the caller's.
    pub host_headers: BTreeMap<String, BTreeMap<String, String>>,
    /// Whether `{{secret.NAME}}` placeholders in the *caller's* `headers` argument are resolved
    /// (default false: such a header is refused). The caller is usually a model, which could
    /// be steered by injected text into sending a secret to another allowed host; configured
    /// headers are bound to hosts and are the safer way to attach credentials.
    pub secrets_in_args: bool,
}

impl Default for HttpGetConfig {
    fn default() -> Self {
        HttpGetConfig {
            allow_hosts: Vec::new(),
            timeout: Duration::from_secs(30),
            max_bytes: 1024 * 1024,
            allow_http: false,
            max_redirects: 5,
            headers: BTreeMap::new(),
            host_headers: BTreeMap::new(),
            secrets_in_args: false,
        }
    }
}

impl HttpGetConfig {
    /// The default configuration allowing `hosts`.
    pub fn allowing<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        HttpGetConfig {
            allow_hosts: hosts.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// One allow-list entry, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    /// `*.suffix`: stored as `.suffix`.
    Subdomains(String),
}

impl HostRule {
    /// Whether the normalized `host` matches.
    fn matches(&self, host: &str) -> bool {
        !host.is_empty()
            && match self {
                HostRule::Exact(h) => h == host,
                HostRule::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn parse_rule(entry: &str) -> Result<HostRule, String> {
    let entry = entry.trim();
    if let Some(suffix) = entry.strip_prefix("*.") {
        let suffix = normalize_host(suffix);
        if suffix.is_empty() || suffix.contains('*') || suffix.contains('/') {
            return Err(format!("bad allow-list entry `{entry}`"));
        }
        return Ok(HostRule::Subdomains(format!(".{suffix}")));
    }
    let host = normalize_host(entry);
    if host.is_empty() || host.contains('*') || host.contains('/') {
        return Err(format!(
            "bad allow-list entry `{entry}`: use a host name or IP address, or `*.domain` for subdomains"
        ));
    }
    Ok(HostRule::Exact(host))
}

/// GET a URL on an allowed host.
///
/// Arguments: `{"url": "https://…", "headers": {"Name": "value"}}` (`headers` optional).
/// Result: `{"url", "status", "headers": {"content-type"}, "body", "bytes", "truncated",
/// "redirects"}`; `url` is the final URL after redirects, `body` is text (invalid UTF-8
/// replaced) cut at [`HttpGetConfig::max_bytes`], `bytes` the number of body bytes read.
///
/// Credentials belong in the configuration ([`HttpGetConfig::host_headers`]), with
/// `{{secret.NAME}}` placeholders resolved from the tool's [`SecretStore`] at call time; every
/// value substituted is redacted (`***`) from the result and from error messages.
///
/// Refused before any connection is made, as [`ToolError::Failed`]: a scheme other than
/// `https` (or `http` when allowed), a URL with credentials, a host not on the allow-list, a
/// forbidden header (`Host`, `Connection`, `Proxy-Authorization`, …). Redirects are followed by
/// the tool itself, at most [`HttpGetConfig::max_redirects`], each target checked by the same
/// rules; the caller's headers are dropped when a redirect leaves the original origin, and
/// host-bound configured headers go only to their hosts. Proxies from the
/// environment are ignored.
pub struct HttpGetTool {
    spec: ToolSpec,
    config: HttpGetConfig,
    rules: Vec<HostRule>,
    host_headers: Vec<(HostRule, BTreeMap<String, String>)>,
    client: reqwest::Client,
    secrets: Option<Arc<dyn SecretStore>>,
}

impl std::fmt::Debug for HttpGetTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGetTool")
            .field("config", &self.config)
            .field("secrets", &self.secrets.is_some())
            .finish()
    }
}

impl HttpGetTool {
    /// A tool with `config`. Fails on a malformed allow-list entry or configured header, or if
    /// the HTTP client cannot be built.
    pub fn new(config: HttpGetConfig) -> Result<Self, String> {
        let rules = config
            .allow_hosts
            .iter()
            .map(|h| parse_rule(h))
            .collect::<Result<Vec<_>, _>>()?;
        for name in config.headers.keys() {
            check_header_name(name)?;
        }
        let mut host_headers = Vec::new();
        for (rule, headers) in &config.host_headers {
            for name in headers.keys() {
                check_header_name(name)?;
            }
            host_headers.push((parse_rule(rule)?, headers.clone()));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("baton-http-get/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))?;
        Ok(HttpGetTool {
            spec: spec(&config),
            config,
            rules,
            host_headers,
            client,
            secrets: None,
        })
    }

    /// The same tool resolving `{{secret.NAME}}` placeholders in headers from `store`.
    pub fn with_secrets(mut self, store: Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(store);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &HttpGetConfig {
        &self.config
    }

    /// Whether `host` (as written in a URL) is on the allow-list.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.rules.iter().any(|rule| rule.matches(&host))
    }

    /// Why `url` may not be fetched, if it may not.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            "http" => {
                return Err(format!(
                    "plain http is not allowed (`{}`); use https",
                    display_url(url)
                ));
            }
            other => {
                return Err(format!(
                    "scheme `{other}` is not allowed; only https{} URLs can be fetched",
                    if self.config.allow_http {
                        " and http"
                    } else {
                        ""
                    }
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "URLs with credentials (user:password@) are not allowed; pass credentials in a header"
                    .to_string(),
            );
        }
        // `host_str` is normalized by the URL parser: lower case, IPv4 in dotted form
        // (`http://2130706433/` is `127.0.0.1`), IPv6 in brackets.
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => normalize_host(h),
            _ => return Err("the URL has no host".to_string()),
        };
        if !self.host_allowed(&host) {
            return Err(format!(
                "host `{host}` is not on the allow-list ({})",
                if self.config.allow_hosts.is_empty() {
                    "the list is empty".to_string()
                } else {
                    self.config.allow_hosts.join(", ")
                }
            ));
        }
        Ok(())
    }

    async fn fetch(
        &self,
        mut url: Url,
        args_headers: &HeaderMap,
        resolver: &mut SecretResolver<'_>,
    ) -> Result<Value, FetchError> {
        let origin = url.origin();
        let mut redirects = 0usize;
        let mut response = loop {
            self.check_url(&url).map_err(|m| {
                FetchError::Refused(if redirects == 0 {
                    m
                } else {
                    format!("redirect {redirects} refused: {m}")
                })
            })?;
            // The caller's headers go to the first origin only: credentials meant for one
            // origin never follow a redirect to another. Configured ones go where configured.
            let mut headers = if url.origin() == origin {
                args_headers.clone()
            } else {
                HeaderMap::new()
            };
            self.configured_headers(&url, resolver, &mut headers)
                .map_err(FetchError::Refused)?;
            let response = self
                .client
                .get(url.clone())
                .headers(headers)
                .send()
                .await
                .map_err(|e| self.request_error(&e))?;
            let status = response.status();
            let is_redirect = matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (true, Some(location)) = (is_redirect, location) else {
                break response;
            };
            if redirects >= self.config.max_redirects {
                return Err(FetchError::Refused(format!(
                    "too many redirects (more than {})",
                    self.config.max_redirects
                )));
            }
            redirects += 1;
            url = url.join(&location).map_err(|e| {
                FetchError::Refused(format!(
                    "redirect {redirects} has a bad Location `{location}`: {e}"
                ))
            })?;
        };

        let status = response.status().as_u16();
        let mut out_headers = Map::new();
        if let Some(ct) = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            out_headers.insert("content-type".into(), json!(ct));
        }
        let max = self.config.max_bytes;
        let mut body: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(&e))? {
            if body.len() + chunk.len() > max {
                body.extend_from_slice(&chunk[..max - body.len()]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        let text = if truncated {
            truncate_utf8(&text, max).to_string()
        } else {
            text.into_owned()
        };
        Ok(json!({
            "url": display_url(&url),
            "status": status,
            "headers": out_headers,
            "body": text,
            "bytes": body.len(),
            "truncated": truncated,
            "redirects": redirects,
        }))
    }

    fn request_error(&self, e: &reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::Tool(self.timeout_error());
        }
        FetchError::Refused(format!("request failed: {}", chain(e)))
    }

    fn timeout_error(&self) -> ToolError {
        ToolError::Timeout {
            tool: self.spec.name.clone(),
            after_ms: u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The caller's `headers` argument, checked. Placeholders are refused unless
    /// [`HttpGetConfig::secrets_in_args`] is set.
    fn args_headers(
        &self,
        args_headers: Option<&Map<String, Value>>,
        resolver: &mut SecretResolver<'_>,
    ) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        for (name, value) in args_headers.into_iter().flatten() {
            let Some(value) = value.as_str() else {
                return Err(format!("header `{name}` must be a string"));
            };
            if !self.config.secrets_in_args && has_placeholder(value) {
                return Err(format!(
                    "header `{name}` refers to a secret; secrets can only be used in headers \
                     configured for the tool (http_get `headers` / `host_headers`), not in its \
                     arguments"
                ));
            }
            let (header, value) = header_pair(name, value, resolver)?;
            map.insert(header, value);
        }
        Ok(map)
    }

    /// Add the configured headers for `url`'s host to `map`, resolving their secrets.
    fn configured_headers(
        &self,
        url: &Url,
        resolver: &mut SecretResolver<'_>,
        map: &mut HeaderMap,
    ) -> Result<(), String> {
        let host = normalize_host(url.host_str().unwrap_or_default());
        for (name, value) in &self.config.headers {
            let (header, value) = header_pair(name, value, resolver)?;
            map.insert(header, value);
        }
        for (rule, headers) in &self.host_headers {
            if rule.matches(&host) {
                for (name, value) in headers {
                    let (header, value) = header_pair(name, value, resolver)?;
                    map.insert(header, value);
                }
            }
        }
        Ok(())
    }
}

/// A checked header with its placeholders resolved; marked sensitive when it carries a secret
/// or credentials.
fn header_pair(
    name: &str,
    value: &str,
    resolver: &mut SecretResolver<'_>,
) -> Result<(HeaderName, HeaderValue), String> {
    check_header_name(name)?;
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let resolved = resolver.resolve_str(value).map_err(|e| e.to_string())?;
    let mut header_value = HeaderValue::from_str(&resolved)
        .map_err(|_| format!("the value of header `{name}` is not a valid header value"))?;
    if resolved != value
        || header == reqwest::header::AUTHORIZATION
        || header == reqwest::header::COOKIE
    {
        header_value.set_sensitive(true);
    }
    Ok((header, header_value))
}

fn check_header_name(name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(format!("header `{name}` may not be set"));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

/// The URL without user info (which is refused anyway) and without the fragment.
fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn spec(config: &HttpGetConfig) -> ToolSpec {
    let hosts = if config.allow_hosts.is_empty() {
        "none".to_string()
    } else {
        config.allow_hosts.join(", ")
    };
    ToolSpec::new(
        HTTP_GET,
        format!(
            "Fetch a URL with HTTP GET and return its status, content type and body as text \
             (at most {} bytes). Only these hosts can be fetched: {hosts}.",
            config.max_bytes
        ),
        json!({
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 8192,
                    "description": "The absolute https URL to fetch."
                },
                "headers": {
                    "type": "object",
                    "description": "Extra request headers, name to value.",
                    "additionalProperties": {"type": "string", "maxLength": 8192},
                    "maxProperties": 32
                }
            },
            "required": ["url"],
            "additionalProperties": false
        }),
    )
    .with_effect(SideEffect::ReadOnly)
}

impl Tool for HttpGetTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _ctx: ToolContext) -> Result<Value, ToolError> {
        let name = &self.spec.name;
        let Some(raw_url) = args.get("url").and_then(Value::as_str) else {
            return Err(invalid(name, "`url` must be a string"));
        };
        let args_headers = match args.get("headers") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(invalid(name, "`headers` must be an object")),
        };
        let url = Url::parse(raw_url)
            .map_err(|e| failed(name, format!("`{raw_url}` is not a valid URL: {e}")))?;
        // Check before resolving anything, so a refused URL costs nothing and reveals nothing.
        self.check_url(&url).map_err(|m| failed(name, m))?;

        let mut resolver = SecretResolver::new(self.secrets.as_deref());
        let headers = self
            .args_headers(args_headers, &mut resolver)
            .map_err(|m| failed(name, resolver.redact(&m)))?;

        let outcome = tokio::time::timeout(
            self.config.timeout,
            self.fetch(url, &headers, &mut resolver),
        )
        .await;
        let used = resolver.used();
        match outcome {
            Err(_) => Err(self.timeout_error()),
            Ok(Err(FetchError::Tool(e))) => Err(e),
            Ok(Err(FetchError::Refused(message))) => Err(failed(name, redact(&message, used))),
            Ok(Ok(value)) => Ok(redact_value(&value, used)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let tool = HttpGetTool::new(HttpGetConfig::allowing([
            "API.example.com.",
            "*.example.org",
            "::1",
        ]))
        .unwrap();
        assert!(tool.host_allowed("api.example.com"));
        assert!(tool.host_allowed("API.EXAMPLE.COM."));
        assert!(!tool.host_allowed("example.com"));
        assert!(!tool.host_allowed("evilapi.example.com"));
        assert!(tool.host_allowed("a.example.org"));
        assert!(tool.host_allowed("a.b.example.org"));
        assert!(!tool.host_allowed("example.org"));
        assert!(!tool.host_allowed("example.org.evil.com"));
        assert!(!tool.host_allowed("aexample.org"));
        assert!(tool.host_allowed("[::1]"));
        assert!(HttpGetTool::new(HttpGetConfig::allowing(["*"])).is_err());
        assert!(HttpGetTool::new(HttpGetConfig::allowing(["*.*.com"])).is_err());
    }
}
