//! Default prices and context windows of common models, for budgets when a workflow's
//! `models:` entry gives no `price`, and for context-window checks.
//!
//! Prices are list prices in US dollars per million tokens (input, output), for standard
//! (not batch, not cached) text tokens, as the providers published them in **August 2025**.
//! They change; a workflow that depends on exact costs should give `price:` explicitly.
//! Local models (Ollama-style names such as `llama3.1` or `qwen2.5:7b`) cost nothing.
//!
//! Names match case-insensitively, on the longest entry that is a prefix of the name and ends
//! where the name ends or at a `-`, `:` or `@`, so dated and tagged variants
//! (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, `claude-3-5-sonnet-latest`,
//! `llama3.1:8b`) find their family, while `gpt-4o` does not answer for `gpt-4o-mini`. An
//! `openai/` or `anthropic/` prefix (OpenRouter's naming) is ignored. Any other name with an
//! Ollama tag (`name:tag`) is taken as a local model; OpenAI fine-tunes (`ft:...`) are not.

/// One model family: name prefix, price (input, output) per million tokens, context window.
struct Entry {
    prefix: &'static str,
    price: (f64, f64),
    context: Option<u32>,
}

const fn entry(prefix: &'static str, input: f64, output: f64, context: u32) -> Entry {
    Entry {
        prefix,
        price: (input, output),
        context: Some(context),
    }
}

const fn local(prefix: &'static str, context: Option<u32>) -> Entry {
    Entry {
        prefix,
        price: (0.0, 0.0),
        context,
    }
}

/// The table (August 2025 list prices).
const TABLE: &[Entry] = &[
    // OpenAI
    entry("gpt-5", 1.25, 10.0, 400_000),
    entry("gpt-5-mini", 0.25, 2.0, 400_000),
    entry("gpt-5-nano", 0.05, 0.40, 400_000),
    entry("gpt-4.1", 2.0, 8.0, 1_047_576),
    entry("gpt-4.1-mini", 0.40, 1.60, 1_047_576),
    entry("gpt-4.1-nano", 0.10, 0.40, 1_047_576),
    entry("gpt-4o", 2.50, 10.0, 128_000),
    entry("gpt-4o-mini", 0.15, 0.60, 128_000),
    entry("gpt-4-turbo", 10.0, 30.0, 128_000),
    entry("gpt-3.5-turbo", 0.50, 1.50, 16_385),
    entry("o1", 15.0, 60.0, 200_000),
    entry("o1-mini", 1.10, 4.40, 128_000),
    entry("o3", 2.0, 8.0, 200_000),
    entry("o3-mini", 1.10, 4.40, 200_000),
    entry("o4-mini", 1.10, 4.40, 200_000),
    // Anthropic
    entry("claude-opus-4", 15.0, 75.0, 200_000),
    entry("claude-opus-4-1", 15.0, 75.0, 200_000),
    entry("claude-sonnet-4", 3.0, 15.0, 200_000),
    entry("claude-3-7-sonnet", 3.0, 15.0, 200_000),
    entry("claude-3-5-sonnet", 3.0, 15.0, 200_000),
    entry("claude-3-5-haiku", 0.80, 4.0, 200_000),
    entry("claude-3-opus", 15.0, 75.0, 200_000),
    entry("claude-3-haiku", 0.25, 1.25, 200_000),
    // Groq
    entry("llama-3.1-8b-instant", 0.05, 0.08, 131_072),
    entry("llama-3.3-70b-versatile", 0.59, 0.79, 131_072),
    entry("llama-3.1-70b-versatile", 0.59, 0.79, 131_072),
    // Local models served by Ollama, llama.cpp and the like (context: the model's own; Ollama
    // runs with a smaller default context unless `num_ctx` is raised).
    local("llama3", Some(8_192)),
    local("llama3.1", Some(131_072)),
    local("llama3.2", Some(131_072)),
    local("llama3.3", Some(131_072)),
    local("qwen2.5", Some(32_768)),
    local("qwen2.5-coder", Some(32_768)),
    local("qwen3", Some(40_960)),
    local("mistral", Some(32_768)),
    local("mistral-nemo", Some(131_072)),
    local("gemma2", Some(8_192)),
    local("gemma3", Some(131_072)),
    local("phi3", None),
    local("phi4", Some(16_384)),
    local("deepseek-r1", None),
];

/// The table entry for `model`, if any (see the [module docs](self) for the matching rules).
fn lookup(model: &str) -> Option<&'static Entry> {
    let name = model.trim().to_ascii_lowercase();
    let name = name
        .strip_prefix("openai/")
        .or_else(|| name.strip_prefix("anthropic/"))
        .unwrap_or(&name);
    TABLE
        .iter()
        .filter(|entry| {
            name.strip_prefix(entry.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', ':', '@']))
        })
        .max_by_key(|entry| entry.prefix.len())
}

/// Whether `model` names a local model by Ollama's `name:tag` convention.
fn is_ollama_tagged(model: &str) -> bool {
    let name = model.trim();
    !name.starts_with("ft:")
        && name
            .split_once(':')
            .is_some_and(|(base, tag)| !base.is_empty() && !tag.is_empty() && !tag.contains(':'))
}

/// The default price of `model`: US dollars per million (input, output) tokens.
///
/// ```
/// use baton_providers::prices::default_price;
///
/// assert_eq!(default_price("gpt-4o-mini-2024-07-18"), Some((0.15, 0.60)));
/// assert_eq!(default_price("claude-3-5-sonnet-latest"), Some((3.0, 15.0)));
/// assert_eq!(default_price("llama3.1:8b"), Some((0.0, 0.0)));
/// assert_eq!(default_price("my-private-model"), None);
/// ```
pub fn default_price(model: &str) -> Option<(f64, f64)> {
    match lookup(model) {
        Some(entry) => Some(entry.price),
        None if is_ollama_tagged(model) => Some((0.0, 0.0)),
        None => None,
    }
}

/// The context window of `model`, in tokens (input and output together), when known.
///
/// ```
/// use baton_providers::prices::context_window;
///
/// assert_eq!(context_window("gpt-4o"), Some(128_000));
/// assert_eq!(context_window("claude-sonnet-4-20250514"), Some(200_000));
/// assert_eq!(context_window("unknown"), None);
/// ```
pub fn context_window(model: &str) -> Option<u32> {
    lookup(model).and_then(|entry| entry.context)
}

/// Whether `base_url` points at this machine (`localhost`, `127.x.x.x`, `[::1]`, `0.0.0.0`):
/// a model served there costs nothing, whatever its name.
///
/// ```
/// use baton_providers::prices::is_local_endpoint;
///
/// assert!(is_local_endpoint("http://localhost:11434/v1"));
/// assert!(is_local_endpoint("http://127.0.0.1:8080"));
/// assert!(!is_local_endpoint("https://api.openai.com/v1"));
/// ```
pub fn is_local_endpoint(base_url: &str) -> bool {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_at_a_boundary() {
        assert_eq!(default_price("gpt-4o"), Some((2.50, 10.0)));
        assert_eq!(default_price("gpt-4o-2024-08-06"), Some((2.50, 10.0)));
        assert_eq!(default_price("gpt-4o-mini"), Some((0.15, 0.60)));
        assert_eq!(default_price("gpt-4.1-mini-2025-04-14"), Some((0.40, 1.60)));
        assert_eq!(default_price("gpt-4.1"), Some((2.0, 8.0)));
        assert_eq!(default_price("o3-mini"), Some((1.10, 4.40)));
        assert_eq!(default_price("o3"), Some((2.0, 8.0)));
        assert_eq!(
            default_price("claude-opus-4-1-20250805"),
            Some((15.0, 75.0))
        );
        assert_eq!(
            default_price("claude-3-5-haiku-20241022"),
            Some((0.80, 4.0))
        );
        assert_eq!(default_price("CLAUDE-SONNET-4-20250514"), Some((3.0, 15.0)));
        assert_eq!(default_price("llama-3.1-8b-instant"), Some((0.05, 0.08)));
        assert_eq!(default_price("llama-3.3-70b-versatile"), Some((0.59, 0.79)));
        assert_eq!(default_price("openai/gpt-4o-mini"), Some((0.15, 0.60)));
        // Not a boundary: "gpt-4" is no entry, and "o1" must not answer for "o1x".
        assert_eq!(default_price("gpt-4"), None);
        assert_eq!(default_price("o1x"), None);
    }

    #[test]
    fn local_models_are_free() {
        assert_eq!(default_price("llama3.1"), Some((0.0, 0.0)));
        assert_eq!(default_price("llama3.2:3b"), Some((0.0, 0.0)));
        assert_eq!(default_price("qwen2.5-coder:7b"), Some((0.0, 0.0)));
        assert_eq!(default_price("some-local-model:q4_K_M"), Some((0.0, 0.0)));
        assert_eq!(default_price("ft:gpt-4o-mini:acme::abc123"), None);
        assert_eq!(context_window("llama3.1:70b"), Some(131_072));
        assert_eq!(context_window("phi3"), None);
    }

    #[test]
    fn context_windows() {
        assert_eq!(context_window("gpt-4.1-nano"), Some(1_047_576));
        assert_eq!(context_window("o4-mini"), Some(200_000));
        assert_eq!(context_window("claude-3-5-sonnet-20241022"), Some(200_000));
    }

    #[test]
    fn local_endpoints() {
        assert!(is_local_endpoint("http://[::1]:11434/v1"));
        assert!(is_local_endpoint("http://user:pw@LOCALHOST/v1"));
        assert!(is_local_endpoint("127.0.0.1:8000"));
        assert!(!is_local_endpoint("https://openrouter.ai/api/v1"));
        assert!(!is_local_endpoint("http://127.evil.example/v1"));
    }
}
