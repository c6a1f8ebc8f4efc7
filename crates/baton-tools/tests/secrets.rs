//! Secrets: placeholder resolution, unknown and malformed references, values never printed,
//! redaction.

#![allow(clippy::unwrap_used)]

use baton_tools::secrets::{
    EnvSecrets, MemorySecrets, ScopedSecrets, Secret, SecretError, SecretResolver, SecretStore,
    has_placeholder, placeholder_names, redact, redact_value, resolve_placeholders,
};
use serde_json::json;
use std::collections::BTreeMap;

fn store() -> MemorySecrets {
    MemorySecrets::new()
        .with("API_TOKEN", "tok-12345")
        .with("USER", "alice")
        .with("PASSWORD", "hunter2")
}

#[test]
fn placeholders_are_resolved() {
    let s = store();
    assert_eq!(
        resolve_placeholders("Bearer {{secret.API_TOKEN}}", &s).unwrap(),
        "Bearer tok-12345"
    );
    assert_eq!(
        resolve_placeholders("{{ secret.USER }}:{{secret.PASSWORD}}@{{secret.USER}}", &s).unwrap(),
        "alice:hunter2@alice"
    );
    // Text without placeholders, and other `{{…}}`, are left as they are.
    assert_eq!(resolve_placeholders("plain", &s).unwrap(), "plain");
    assert_eq!(
        resolve_placeholders("{{ state.x }} and {{secret.USER}}", &s).unwrap(),
        "{{ state.x }} and alice"
    );
}

#[test]
fn resolver_tracks_used_secrets_for_redaction() {
    let s = store();
    let mut r = SecretResolver::new(Some(&s));
    let headers: BTreeMap<String, String> = [
        (
            "Authorization".to_string(),
            "Bearer {{secret.API_TOKEN}}".to_string(),
        ),
        ("X-User".to_string(), "{{secret.USER}}".to_string()),
    ]
    .into();
    let resolved = r.resolve_map(&headers).unwrap();
    assert_eq!(resolved["Authorization"], "Bearer tok-12345");
    assert_eq!(resolved["X-User"], "alice");
    let args = r
        .resolve_value(
            &json!({"env": {"TOKEN": "{{secret.API_TOKEN}}"}, "n": [1, "{{secret.USER}}"]}),
        )
        .unwrap();
    assert_eq!(
        args,
        json!({"env": {"TOKEN": "tok-12345"}, "n": [1, "alice"]})
    );
    assert_eq!(r.used().len(), 2, "each secret remembered once");
    assert_eq!(
        r.redact("the server said tok-12345 to alice"),
        "the server said *** to ***"
    );
    // PASSWORD was never used, so it is not in the redaction set of this call.
    assert_eq!(r.redact("hunter2"), "hunter2");
}

#[test]
fn unknown_secret_names_the_secret_not_a_value() {
    let s = store();
    let err = resolve_placeholders("Bearer {{secret.MISSING}}", &s).unwrap_err();
    assert!(matches!(&err, SecretError::Unknown { name, .. } if name == "MISSING"));
    let msg = err.to_string();
    assert!(msg.contains("MISSING"), "{msg}");
    assert!(!msg.contains("tok-12345"), "{msg}");

    // The environment store says which variable to set.
    let env = EnvSecrets::new();
    let msg = resolve_placeholders("{{secret.BATON_TOOLS_TEST_NOT_SET_9}}", &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("BATON_SECRET_BATON_TOOLS_TEST_NOT_SET_9"),
        "{msg}"
    );

    // With no store at all, the error says so.
    let msg = SecretResolver::new(None)
        .resolve_str("{{secret.API_TOKEN}}")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("API_TOKEN") && msg.contains("no secret store"),
        "{msg}"
    );
}

#[test]
fn malformed_placeholders_are_errors() {
    let s = store();
    for bad in [
        "{{secret.API_TOKEN",
        "{{secret.}}",
        "{{secret.has-dash}}",
        "{{ secret.1X }}",
    ] {
        let err = resolve_placeholders(bad, &s).unwrap_err();
        assert!(matches!(err, SecretError::Malformed { .. }), "{bad}: {err}");
    }
    assert!(has_placeholder("x {{ secret.Y"));
    assert!(!has_placeholder("x {{ state.y }}"));
    assert_eq!(
        placeholder_names("{{secret.A}} {{secret.B}} {{secret.A}}").unwrap(),
        vec!["A", "B"]
    );
}

#[test]
fn debug_and_display_never_print_values() {
    let secret = Secret::new("tok-12345");
    assert_eq!(format!("{secret}"), "***");
    assert!(!format!("{secret:?}").contains("tok-12345"));
    assert_eq!(secret.expose(), "tok-12345");
    let dbg = format!("{:?}", store());
    assert!(
        !dbg.contains("tok-12345") && !dbg.contains("hunter2"),
        "{dbg}"
    );
    let s = store();
    let mut r = SecretResolver::new(Some(&s));
    r.resolve_str("{{secret.PASSWORD}}").unwrap();
    assert!(!format!("{r:?}").contains("hunter2"));
}

#[test]
fn redaction_replaces_every_value() {
    let secrets = vec![Secret::new("abc"), Secret::new("abcdef"), Secret::new("")];
    // The longer value is redacted whole; the empty one is ignored.
    assert_eq!(redact("xabcdefx abc", &secrets), "x***x ***");
    assert_eq!(redact("nothing here", &secrets), "nothing here");
    assert_eq!(
        redact_value(&json!({"k abc": ["abcdef", 1, {"z": "abc!"}]}), &secrets),
        json!({"k ***": ["***", 1, {"z": "***!"}]})
    );
}

#[test]
fn scoped_store_allows_only_declared_names() {
    let scoped = ScopedSecrets::new(store(), ["API_TOKEN"]);
    assert_eq!(scoped.get("API_TOKEN").unwrap().expose(), "tok-12345");
    assert!(scoped.get("PASSWORD").is_none());
    let msg = resolve_placeholders("{{secret.PASSWORD}}", &scoped)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("PASSWORD") && msg.contains("secrets:"),
        "{msg}"
    );
}

#[test]
fn env_store_reads_prefix_and_mapping() {
    // Cargo sets these for the test process; setting variables is `unsafe` in edition 2024.
    let by_prefix = EnvSecrets::with_prefix("CARGO_");
    assert_eq!(
        by_prefix.get("MANIFEST_DIR").unwrap().expose(),
        env!("CARGO_MANIFEST_DIR")
    );
    let mapped = EnvSecrets::new().map("DIR", "CARGO_MANIFEST_DIR");
    assert_eq!(mapped.var_for("DIR"), "CARGO_MANIFEST_DIR");
    assert_eq!(mapped.var_for("OTHER"), "BATON_SECRET_OTHER");
    assert_eq!(
        mapped.get("DIR").unwrap().expose(),
        env!("CARGO_MANIFEST_DIR")
    );
    // Names that are not identifiers are never looked up.
    assert!(by_prefix.get("MANIFEST_DIR=x").is_none());
}

#[tokio::test]
async fn subprocess_environment_gets_secrets_and_output_is_redacted() {
    use baton_core::{Tool, ToolContext, ToolError, ToolSpec};
    use baton_tools::{SubprocessOptions, SubprocessTool};
    use std::sync::Arc;

    let options = SubprocessOptions {
        env: vec![("TOKEN".into(), "{{secret.API_TOKEN}}".into())],
        ..SubprocessOptions::default()
    };
    let spec = |name: &str| ToolSpec::new(name, "", json!({"type": "object"}));
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let echo = SubprocessTool::new(
        spec("echo"),
        sh(r#"printf '{"seen": "%s", "len": %s}' "$TOKEN" "${#TOKEN}""#),
        options.clone(),
    )
    .with_secrets(Arc::new(store()));
    let out = echo.call(json!({}), ToolContext::default()).await.unwrap();
    assert_eq!(
        out,
        json!({"seen": "***", "len": 9}),
        "the program saw the 9-byte value"
    );

    let fail = SubprocessTool::new(
        spec("fail"),
        sh(r#"echo "bad $TOKEN" >&2; exit 3"#),
        options.clone(),
    )
    .with_secrets(Arc::new(store()));
    match fail.call(json!({}), ToolContext::default()).await {
        Err(ToolError::Failed { message, .. }) => {
            assert!(
                message.contains("bad ***") && !message.contains("tok-12345"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }

    let missing = SubprocessTool::new(spec("missing"), sh("true"), options)
        .with_secrets(Arc::new(MemorySecrets::new()));
    match missing.call(json!({}), ToolContext::default()).await {
        Err(ToolError::Failed { message, .. }) => {
            assert!(
                message.contains("`TOKEN`") && message.contains("API_TOKEN"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}
