//! What the HTTP providers share: the client (reqwest over rustls), a Server-Sent Events
//! decoder, reading bodies under a timeout, and turning transport failures and error statuses
//! into [`ModelError`]s.
//!
//! # Error classification
//!
//! | What happened | [`ModelError`] | Retryable |
//! |---|---|---|
//! | The server answered with a non-2xx status | `Http { status, message }`, the message taken from the body's `error.message` (or `error`, `message`, `detail`) when the body is JSON, else the body's text | 429 and 5xx |
//! | No response headers, or no body bytes, within the timeout | `Timeout { after_ms }` | yes |
//! | Connection refused, reset, closed mid-body, TLS failure | `Connection { message }` | yes |
//! | A body that is not the JSON the API documents, a stream that ends cleanly before its finish marker, a reply larger than 64 MiB | `Malformed { message }` | no |
//! | A URL or header that cannot be used | `Config { message }` | no |
//!
//! # SSE decoding
//!
//! [`SseDecoder`] follows the WHATWG `text/event-stream` rules: lines end with CRLF, LF or CR
//! (a CRLF split across two chunks is one line end), `:` starts a comment, `data` lines of one
//! event are joined with `\n`, one space after the colon is dropped, a blank line dispatches
//! the event and a leading byte-order mark is skipped. Bytes are buffered until a line is
//! complete, so chunks may split events, lines and UTF-8 characters anywhere.

use baton_core::ModelError;
use std::error::Error as StdError;
use std::time::Duration;

/// The largest reply body read (streamed or not); a larger one is [`ModelError::Malformed`].
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The most of an error body quoted in [`ModelError::Http`] when it is not JSON.
const MAX_QUOTED_ERROR: usize = 500;

/// One dispatched Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one (SSE's default type is `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
}

/// An incremental `text/event-stream` decoder: feed it the body's chunks as they arrive and
/// take the events each chunk completes. See the [module docs](self) for the rules it follows.
///
/// ```
/// use baton_providers::http::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// assert!(decoder.push(b"event: ping\r\ndata: {\"a\"").is_empty());
/// let events = decoder.push(b":1}\r\n\r\n: a comment\n");
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].event.as_deref(), Some("ping"));
/// assert_eq!(events[0].data, "{\"a\":1}");
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The previous byte was a CR, so an LF right after it ends nothing.
    after_cr: bool,
    /// At least one line has ended (the byte-order mark is only looked for in the first).
    seen_line: bool,
    /// The pending event's type.
    event: Option<String>,
    /// The pending event's data.
    data: String,
    /// Whether the pending event has any `data` line (an empty one counts).
    has_data: bool,
    /// The pending event's id.
    id: Option<String>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk of the body; returns the events it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ => self.line.push(byte),
            }
        }
        out
    }

    /// The body has ended: returns the pending event if its last line was complete but the
    /// blank line that dispatches it never came. (The SSE standard drops such an event; many
    /// servers close the stream right after their last `data:` line, so baton keeps it.) A
    /// partial last line is dropped: the stream was cut inside it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.line.clear();
        self.after_cr = false;
        self.dispatch()
    }

    /// Whether bytes of an unfinished line or event are waiting.
    pub fn has_pending(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some() || self.id.is_some()
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let mut line: &[u8] = &self.line;
        if !self.seen_line {
            self.seen_line = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                out.push(event);
            }
        } else if line[0] != b':' {
            let text = String::from_utf8_lossy(line);
            let (field, value) = match text.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (text.as_ref(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                "id" if !value.contains('\0') => self.id = Some(value.to_string()),
                // `retry` and unknown fields are ignored, as the standard says.
                _ => {}
            }
        }
        self.line.clear();
    }

    /// Take the pending event, if it has data (an event without data is dropped, as the
    /// standard says).
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id,
        })
    }
}

/// The shared HTTP client: rustls with the platform's certificate verifier, no overall
/// request timeout (the providers time each wait themselves, so a long stream that keeps
/// sending is not cut), and `timeout` for connecting.
pub(crate) fn build_client(timeout: Duration) -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|error| ModelError::Config {
            message: format!("cannot build the HTTP client: {}", error_chain(&error)),
        })
}

/// Milliseconds in `timeout`, for [`ModelError::Timeout`].
pub(crate) fn millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

/// Send `request`, waiting at most `timeout` for the response headers; a non-2xx status
/// becomes [`ModelError::Http`] with the message from its body.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ModelError> {
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(ModelError::Timeout {
                after_ms: millis(timeout),
            });
        }
        Ok(Err(error)) => return Err(classify(&error, timeout)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    // The error body is read best-effort: a status is worth more than a perfect message.
    let body = read_body(response, timeout, 64 * 1024)
        .await
        .unwrap_or_default();
    Err(ModelError::Http {
        status: status.as_u16(),
        message: error_message(&body, status),
    })
}

/// The next chunk of `response`'s body, waiting at most `timeout` for it; `None` at its end.
pub(crate) async fn next_chunk(
    response: &mut reqwest::Response,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, ModelError> {
    match tokio::time::timeout(timeout, response.chunk()).await {
        Err(_) => Err(ModelError::Timeout {
            after_ms: millis(timeout),
        }),
        Ok(Err(error)) => Err(match classify(&error, timeout) {
            ModelError::Connection { message } => ModelError::Connection {
                message: format!("the connection broke while reading the reply: {message}"),
            },
            other => other,
        }),
        Ok(Ok(chunk)) => Ok(chunk.map(|bytes| bytes.to_vec())),
    }
}

/// Read the whole body, waiting at most `timeout` for each chunk and keeping at most
/// `limit` bytes (a longer body is [`ModelError::Malformed`]).
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, ModelError> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut response, timeout).await? {
        if body.len() + chunk.len() > limit {
            return Err(ModelError::Malformed {
                message: format!("the reply is larger than {limit} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turn a transport error into a [`ModelError`].
pub(crate) fn classify(error: &reqwest::Error, timeout: Duration) -> ModelError {
    let timed_out = error.is_timeout()
        || sources(error).any(|source| {
            source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
    if timed_out {
        ModelError::Timeout {
            after_ms: millis(timeout),
        }
    } else if error.is_builder() {
        ModelError::Config {
            message: format!("invalid request: {}", error_chain(error)),
        }
    } else if error.is_connect() {
        ModelError::Connection {
            message: format!("cannot connect: {}", error_chain(error)),
        }
    } else {
        // Resets, connections closed mid-body, broken chunked encoding: all worth a retry.
        ModelError::Connection {
            message: error_chain(error),
        }
    }
}

/// `error` and its sources, most general first.
fn sources<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |error: &&'a (dyn StdError + 'static)| {
        (*error).source()
    })
}

/// `error: source: source…`, skipping a source that only repeats its parent.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for source in sources(error) {
        let text = source.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The message of an error body: the JSON `error.message` (OpenAI, Anthropic, most
/// compatible servers), `error` as a string (Ollama), `message` or `detail` (FastAPI-based
/// servers), else the body's text, shortened; the status's reason when the body is empty.
pub(crate) fn error_message(body: &[u8], status: reqwest::StatusCode) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(message) = json_error_message(&value)
    {
        return message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    truncate(text, MAX_QUOTED_ERROR)
}

/// The message in a JSON error object, if it has one where providers put it.
pub(crate) fn json_error_message(value: &serde_json::Value) -> Option<String> {
    let error = value.get("error");
    let candidates = [
        error.and_then(|error| error.get("message")),
        error,
        value.get("message"),
        value.get("detail"),
    ];
    candidates.into_iter().flatten().find_map(|candidate| {
        candidate
            .as_str()
            .map(str::to_string)
            .filter(|message| !message.is_empty())
    })
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A [`ModelError::Malformed`] for a JSON body that did not parse, quoting its start.
pub(crate) fn malformed_json(what: &str, error: &serde_json::Error, body: &[u8]) -> ModelError {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return ModelError::Malformed {
            message: format!("{what} is empty"),
        };
    }
    ModelError::Malformed {
        message: format!(
            "{what} is not the expected JSON ({error}); it begins: {}",
            truncate(text.trim(), 200)
        ),
    }
}

/// Join `base_url` and `path` with exactly one `/` between them.
pub(crate) fn join_url(base_url: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.push(chunk));
        }
        events.extend(decoder.finish());
        events
    }

    fn data(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.to_string(),
            id: None,
        }
    }

    #[test]
    fn decodes_fields_comments_and_line_ends() {
        let stream =
            b"\xEF\xBB\xBF: hello\r\nevent: a\r\ndata: 1\r\ndata:2\r\nid: 7\r\nretry: 10\r\n\r\n\
                       data:  two spaces\n\ndata\n\nevent: lonely\n\n:only a comment\rdata: cr\r\r";
        let events = decode_all(&[stream]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "1\n2".into(),
                    id: Some("7".into()),
                },
                data(" two spaces"),
                data(""),
                data("cr"),
            ]
        );
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let events = decode_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]);
        assert_eq!(events, vec![data("a"), data("b")]);
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let text = "data: héllo ✓\n\n".as_bytes();
        let (a, b) = text.split_at(9); // inside "é"
        assert_eq!(decode_all(&[a, b]), vec![data("héllo ✓")]);
    }

    #[test]
    fn finish_keeps_complete_lines_and_drops_a_cut_one() {
        assert_eq!(decode_all(&[b"data: [DONE]\n"]), vec![data("[DONE]")]);
        assert_eq!(decode_all(&[b"data: {\"a\":"]), vec![]);
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: x\n\ndata: {\"cut").len() == 1);
        assert!(decoder.has_pending());
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn error_messages_come_from_json_bodies() {
        let status = reqwest::StatusCode::TOO_MANY_REQUESTS;
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_message(openai, status), "Rate limit reached");
        let anthropic =
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}"#;
        assert_eq!(error_message(anthropic, status), "Slow down");
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#, status),
            "model not found"
        );
        assert_eq!(error_message(br#"{"detail":"nope"}"#, status), "nope");
        assert_eq!(
            error_message(b"  upstream down \n", status),
            "upstream down"
        );
        assert_eq!(error_message(b"", status), "Too Many Requests");
        let long = "x".repeat(2000);
        assert_eq!(
            error_message(long.as_bytes(), status).chars().count(),
            MAX_QUOTED_ERROR + 1
        );
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(
            join_url("http://h/v1/", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(join_url("http://h", "v1/messages"), "http://h/v1/messages");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    /// A generated event: (type, data lines, id), and comments to put before it.
    type GenEvent = (Option<String>, Vec<String>, Option<String>, Vec<String>);

    fn field_value() -> impl Strategy<Value = String> {
        // No CR or LF (they end lines); anything else, including ':' and leading spaces.
        "[ -~éλ✓:]{0,12}"
    }

    fn gen_event() -> impl Strategy<Value = GenEvent> {
        (
            proptest::option::of("[a-z_]{1,10}"),
            proptest::collection::vec(field_value(), 1..4),
            proptest::option::of("[a-z0-9]{1,6}"),
            proptest::collection::vec(field_value(), 0..2),
        )
    }

    fn serialize(events: &[GenEvent], eol: &str, bom: bool) -> Vec<u8> {
        let mut out = String::new();
        if bom {
            out.push('\u{FEFF}');
        }
        for (event, lines, id, comments) in events {
            for comment in comments {
                out.push_str(&format!(":{comment}{eol}"));
            }
            if let Some(event) = event {
                out.push_str(&format!("event: {event}{eol}"));
            }
            for line in lines {
                out.push_str(&format!("data: {line}{eol}"));
            }
            if let Some(id) = id {
                out.push_str(&format!("id: {id}{eol}"));
            }
            out.push_str(eol);
        }
        out.into_bytes()
    }

    fn expected(events: &[GenEvent]) -> Vec<SseEvent> {
        events
            .iter()
            .map(|(event, lines, id, _)| SseEvent {
                event: event.clone(),
                data: lines.join("\n"),
                id: id.clone(),
            })
            .collect()
    }

    proptest! {
        /// Any split of a valid stream into chunks decodes to the same events, and those are
        /// the events that were written.
        #[test]
        fn any_chunking_gives_the_same_events(
            events in proptest::collection::vec(gen_event(), 0..8),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            bom in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let bytes = serialize(&events, eol, bom);
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(decode_all(&chunks), expected(&events));
            prop_assert_eq!(decode_all(&[&bytes]), expected(&events));
        }

        /// Whatever the bytes, the decoder neither panics nor loses the ability to finish.
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        ) {
            let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = decode_all(&slices);
        }
    }
}
