//! Failure classification of both HTTP providers over real HTTP: error statuses (with the
//! provider's message pulled out of the body), timeouts, refused and aborted connections, TLS
//! failures, bodies that are not the documented JSON and streams that stop early. Every case
//! runs against the OpenAI-compatible and the Anthropic provider.

#![allow(clippy::unwrap_used)]

mod support;

use baton_core::{CompletionResponse, Model, ModelError};
use baton_providers::anthropic::{AnthropicConfig, AnthropicModel};
use baton_providers::openai::{OpenAiConfig, OpenAiModel};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{MockServer, Reply, hello, recording_sink, refused_url, split};

#[derive(Clone, Copy, Debug)]
enum Provider {
    OpenAi,
    Anthropic,
}

const BOTH: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

/// One call to `url` through `provider`, streaming or not, with `timeout`.
async fn call(
    provider: Provider,
    url: &str,
    stream: bool,
    timeout: Duration,
) -> Result<CompletionResponse, ModelError> {
    let (sink, _) = recording_sink();
    match provider {
        Provider::OpenAi => {
            let model = OpenAiModel::new(
                OpenAiConfig::new("gpt-4o-mini")
                    .with_base_url(format!("{url}/v1"))
                    .with_api_key("sk-test")
                    .with_stream(stream)
                    .with_timeout(timeout),
            )?;
            model.complete_streaming(hello(""), sink).await
        }
        Provider::Anthropic => {
            let model = AnthropicModel::new(
                AnthropicConfig::new("claude-3-5-haiku-latest")
                    .with_base_url(url)
                    .with_api_key("sk-ant-test")
                    .with_stream(stream)
                    .with_timeout(timeout),
            )?;
            model.complete_streaming(hello(""), sink).await
        }
    }
}

/// Serve `reply` once and make one call.
async fn answer(
    provider: Provider,
    reply: Reply,
    stream: bool,
    timeout: Duration,
) -> Result<CompletionResponse, ModelError> {
    let server = MockServer::start(vec![reply]).await;
    call(provider, &server.url, stream, timeout).await
}

const PATIENT: Duration = Duration::from_secs(5);

/// Each provider's error body for `status`, with `message`.
fn error_body(provider: Provider, kind: &str, message: &str) -> String {
    match provider {
        Provider::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Provider::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    }
    .to_string()
}

/// The beginning of a streamed text reply, without its end.
fn partial_stream(provider: Provider) -> String {
    match provider {
        Provider::OpenAi => concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
            "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,",
            "\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        )
        .to_string(),
        Provider::Anthropic => concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",",
            "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",",
            "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        )
        .to_string(),
    }
}

#[tokio::test]
async fn status_401_is_not_retryable_and_carries_the_providers_message() {
    for provider in BOTH {
        let (kind, message) = match provider {
            Provider::OpenAi => (
                "invalid_request_error",
                "Incorrect API key provided: sk-test.",
            ),
            Provider::Anthropic => ("authentication_error", "invalid x-api-key"),
        };
        let error = answer(
            provider,
            Reply::status(401, error_body(provider, kind, message)),
            false,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 401,
                message: message.into()
            },
            "{provider:?}"
        );
        assert!(!error.is_retryable());
    }
}

#[tokio::test]
async fn status_429_is_retryable() {
    for provider in BOTH {
        let message = "Rate limit reached for requests";
        let error = answer(
            provider,
            Reply::status(429, error_body(provider, "rate_limit_error", message)),
            true,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 429,
                message: message.into()
            },
            "{provider:?}"
        );
        assert!(error.is_retryable());
    }
}

#[tokio::test]
async fn server_errors_are_retryable_with_json_or_text_bodies() {
    for provider in BOTH {
        let error = answer(
            provider,
            Reply::status(
                500,
                error_body(provider, "api_error", "Internal server error"),
            ),
            false,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 500,
                message: "Internal server error".into()
            }
        );
        assert!(error.is_retryable());

        // A proxy's plain-text 503, and Anthropic's 529 "overloaded".
        let error = answer(
            provider,
            Reply::status(
                503,
                "upstream connect error or disconnect/reset before headers\n",
            ),
            false,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 503,
                message: "upstream connect error or disconnect/reset before headers".into()
            }
        );
        assert!(error.is_retryable());
        let error = answer(
            provider,
            Reply::status(529, error_body(provider, "overloaded_error", "Overloaded")),
            false,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Http {
                status: 529,
                message: "Overloaded".into()
            }
        );
        assert!(error.is_retryable());
    }
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_times_out() {
    for provider in BOTH {
        let started = Instant::now();
        let error = answer(
            provider,
            Reply::After {
                delay: Duration::from_secs(3),
                reply: Box::new(Reply::ok("{}")),
            },
            false,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(error, ModelError::Timeout { after_ms: 300 }, "{provider:?}");
        assert!(error.is_retryable());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn a_stream_that_stalls_times_out() {
    for provider in BOTH {
        let error = answer(
            provider,
            Reply::Sse {
                chunks: vec![
                    partial_stream(provider).into_bytes(),
                    b": late\n\n".to_vec(),
                ],
                delay: Duration::from_secs(3),
            },
            true,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(error, ModelError::Timeout { after_ms: 300 }, "{provider:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_a_retryable_connection_error() {
    for provider in BOTH {
        let url = refused_url().await;
        let error = call(provider, &url, false, PATIENT).await.unwrap_err();
        assert!(
            matches!(&error, ModelError::Connection { message } if message.starts_with("cannot connect")),
            "{provider:?}: {error:?}"
        );
        assert!(error.is_retryable());
    }
}

#[tokio::test]
async fn tls_is_spoken_to_https_urls() {
    // rustls is compiled in: an https URL starts a TLS handshake, which a plain-HTTP server
    // fails. (Without TLS support, reqwest would refuse the scheme instead.)
    for provider in BOTH {
        let server = MockServer::start(vec![]).await;
        let url = server.url.replace("http://", "https://");
        let error = call(provider, &url, false, PATIENT).await.unwrap_err();
        assert!(
            matches!(error, ModelError::Connection { .. }),
            "{provider:?}: {error:?}"
        );
        assert!(server.requests().is_empty());
    }
}

#[tokio::test]
async fn bodies_that_are_not_the_documented_json_are_malformed() {
    for provider in BOTH {
        for body in ["<html>gateway</html>", "{\"unexpected\": true}", "", "[1,2"] {
            let error = answer(provider, Reply::ok(body), false, PATIENT)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, ModelError::Malformed { message } if message.contains("reply")),
                "{provider:?} {body:?}: {error:?}"
            );
            assert!(!error.is_retryable());
        }
    }
}

#[tokio::test]
async fn an_error_body_sent_with_status_200_is_still_an_error() {
    for provider in BOTH {
        let error = answer(
            provider,
            Reply::ok(error_body(provider, "rate_limit_error", "Slow down")),
            false,
            PATIENT,
        )
        .await
        .unwrap_err();
        let status = match provider {
            Provider::OpenAi => 500,
            Provider::Anthropic => 429,
        };
        assert!(
            matches!(&error, ModelError::Http { status: s, message } if *s == status && message.contains("Slow down")),
            "{provider:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_that_ends_before_its_finish_is_malformed() {
    for provider in BOTH {
        let (sink, seen) = recording_sink();
        let server =
            MockServer::start(vec![Reply::sse_chunked(&partial_stream(provider), 9)]).await;
        let error = match provider {
            Provider::OpenAi => OpenAiModel::new(
                OpenAiConfig::new("m")
                    .with_base_url(&server.url)
                    .with_stream(true),
            )
            .unwrap()
            .complete_streaming(hello(""), sink)
            .await
            .unwrap_err(),
            Provider::Anthropic => AnthropicModel::new(
                AnthropicConfig::new("m")
                    .with_base_url(&server.url)
                    .with_stream(true),
            )
            .unwrap()
            .complete_streaming(hello(""), sink)
            .await
            .unwrap_err(),
        };
        assert!(
            matches!(&error, ModelError::Malformed { message } if message.contains("ended before")),
            "{provider:?}: {error:?}"
        );
        // What did arrive was still handed on.
        assert_eq!(support::texts(&seen.lock().unwrap()), vec!["Hel"]);
    }
}

#[tokio::test]
async fn a_stream_whose_connection_is_cut_is_a_connection_error() {
    for provider in BOTH {
        let error = answer(
            provider,
            Reply::SseAborted {
                chunks: split(&partial_stream(provider), 40),
            },
            true,
            PATIENT,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, ModelError::Connection { .. }),
            "{provider:?}: {error:?}"
        );
        assert!(error.is_retryable());
    }
}

#[tokio::test]
async fn bad_headers_are_configuration_errors() {
    let error = OpenAiModel::new(OpenAiConfig::new("m").with_api_key("bad\nkey")).unwrap_err();
    assert!(matches!(error, ModelError::Config { .. }));
    let error =
        AnthropicModel::new(AnthropicConfig::new("m").with_header("bad header", "x")).unwrap_err();
    assert!(matches!(error, ModelError::Config { .. }));
}
