//! The file tools: normal reads, writes and listings inside the sandbox; traversal, absolute
//! paths and symbolic-link escapes refused; size limits.

#![allow(clippy::unwrap_used)]

use baton_core::{SideEffect, Tool, ToolContext, ToolError};
use baton_tools::builtin::{
    FileListTool, FileReadTool, FileWriteTool, FilesConfig, Sandbox, file_tools,
};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::sync::Arc;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    read: FileReadTool,
    write: FileWriteTool,
    list: FileListTool,
}

fn fixture_with(limits: impl FnOnce(&mut FilesConfig)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("sandbox");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.txt"), "top secret").unwrap();
    let mut config = FilesConfig::new(&root);
    limits(&mut config);
    let (read, write, list) = file_tools(Arc::new(Sandbox::new(config).unwrap()));
    Fixture {
        _tmp: tmp,
        root,
        outside,
        read,
        write,
        list,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

async fn call(tool: &impl Tool, args: Value) -> Result<Value, ToolError> {
    tool.call(args, ToolContext::default()).await
}

fn refused(result: Result<Value, ToolError>, expect: &str) {
    match result {
        Err(ToolError::Failed { message, .. }) => {
            assert!(
                message.contains(expect),
                "expected `{expect}` in: {message}"
            )
        }
        other => panic!("expected a refusal containing `{expect}`, got {other:?}"),
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[tokio::test]
async fn specs() {
    let f = fixture();
    assert_eq!(f.read.spec().effect, SideEffect::ReadOnly);
    assert_eq!(f.write.spec().effect, SideEffect::Idempotent);
    assert_eq!(f.list.spec().effect, SideEffect::ReadOnly);
    for spec in [f.read.spec(), f.write.spec(), f.list.spec()] {
        assert_eq!(
            spec.parameters["additionalProperties"],
            json!(false),
            "{}",
            spec.name
        );
    }
    assert_eq!(
        f.write.spec().parameters["required"],
        json!(["path", "content"])
    );
    assert!(f.list.spec().parameters.get("required").is_none());
}

#[tokio::test]
async fn write_read_list() {
    let f = fixture();
    let out = call(
        &f.write,
        json!({"path": "notes/day1/a.md", "content": "# Hi\n"}),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({"path": "notes/day1/a.md", "bytes": 5, "created": true, "changed": true})
    );
    assert_eq!(
        fs::read_to_string(f.root.join("notes/day1/a.md")).unwrap(),
        "# Hi\n"
    );

    // Writing the same content again changes nothing (idempotent).
    let out = call(
        &f.write,
        json!({"path": "./notes/day1/a.md", "content": "# Hi\n"}),
    )
    .await
    .unwrap();
    assert_eq!(out["changed"], false);
    assert_eq!(out["created"], false);
    let out = call(
        &f.write,
        json!({"path": "notes/day1/a.md", "content": "v2"}),
    )
    .await
    .unwrap();
    assert_eq!(out["changed"], true);

    let out = call(&f.read, json!({"path": "notes/day1/a.md"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"path": "notes/day1/a.md", "content": "v2", "size": 2, "truncated": false})
    );

    call(&f.write, json!({"path": "b.txt", "content": "bee"}))
        .await
        .unwrap();
    let out = call(&f.list, json!({})).await.unwrap();
    assert_eq!(
        out,
        json!({"path": ".", "entries": [
            {"name": "b.txt", "type": "file", "size": 3},
            {"name": "notes", "type": "dir"}
        ], "truncated": false})
    );
    let out = call(&f.list, json!({"path": "notes/day1"})).await.unwrap();
    assert_eq!(
        out["entries"],
        json!([{"name": "a.md", "type": "file", "size": 2}])
    );
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(f.root.join("notes/day1")).unwrap().count(), 1);
}

#[tokio::test]
async fn traversal_and_absolute_paths_are_refused() {
    let f = fixture();
    for path in [
        "../outside/secret.txt",
        "a/../../outside/secret.txt",
        "a/../b",
        "..",
    ] {
        refused(call(&f.read, json!({"path": path})).await, "`..`");
        refused(
            call(&f.write, json!({"path": path, "content": "x"})).await,
            "`..`",
        );
        refused(call(&f.list, json!({"path": path})).await, "`..`");
    }
    let abs = f.outside.join("secret.txt");
    let abs = abs.to_str().unwrap();
    refused(call(&f.read, json!({"path": abs})).await, "absolute");
    refused(
        call(&f.write, json!({"path": abs, "content": "x"})).await,
        "absolute",
    );
    refused(call(&f.list, json!({"path": "/"})).await, "absolute");
    refused(call(&f.read, json!({"path": "a\u{0}b"})).await, "NUL");
    assert_eq!(
        fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
        "top secret"
    );
    assert!(!f.root.join("a").exists(), "nothing was created");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinked_file_pointing_outside_is_refused() {
    let f = fixture();
    symlink(&f.outside.join("secret.txt"), &f.root.join("leak.txt"));
    refused(
        call(&f.read, json!({"path": "leak.txt"})).await,
        "outside the sandbox",
    );
    refused(
        call(&f.write, json!({"path": "leak.txt", "content": "pwned"})).await,
        "outside the sandbox",
    );
    assert_eq!(
        fs::read_to_string(f.outside.join("secret.txt")).unwrap(),
        "top secret"
    );
    // A dangling link is not written through either.
    symlink(&f.outside.join("new.txt"), &f.root.join("dangling.txt"));
    refused(
        call(&f.write, json!({"path": "dangling.txt", "content": "x"})).await,
        "symbolic link to nothing",
    );
    assert!(!f.outside.join("new.txt").exists());
    // The listing shows links as links, without following them.
    let out = call(&f.list, json!({})).await.unwrap();
    assert_eq!(
        out["entries"][1],
        json!({"name": "leak.txt", "type": "symlink"})
    );
}

#[cfg(unix)]
#[tokio::test]
async fn symlinked_directory_escape_is_refused() {
    let f = fixture();
    symlink(&f.outside, &f.root.join("out"));
    refused(
        call(&f.read, json!({"path": "out/secret.txt"})).await,
        "outside the sandbox",
    );
    refused(
        call(&f.write, json!({"path": "out/new.txt", "content": "x"})).await,
        "outside the sandbox",
    );
    refused(
        call(
            &f.write,
            json!({"path": "out/deeper/new.txt", "content": "x"}),
        )
        .await,
        "outside the sandbox",
    );
    refused(
        call(&f.list, json!({"path": "out"})).await,
        "outside the sandbox",
    );
    assert!(!f.outside.join("new.txt").exists());
    assert!(!f.outside.join("deeper").exists());
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_inside_the_sandbox_are_followed() {
    let f = fixture();
    fs::create_dir(f.root.join("real")).unwrap();
    fs::write(f.root.join("real/data.txt"), "inside").unwrap();
    symlink(&f.root.join("real"), &f.root.join("alias"));
    symlink(Path::new("real/data.txt"), &f.root.join("data-link.txt"));
    let out = call(&f.read, json!({"path": "alias/data.txt"}))
        .await
        .unwrap();
    assert_eq!(out["content"], "inside");
    assert_eq!(
        out["path"], "real/data.txt",
        "the resolved path is reported"
    );
    let out = call(&f.read, json!({"path": "data-link.txt"}))
        .await
        .unwrap();
    assert_eq!(out["content"], "inside");
    call(
        &f.write,
        json!({"path": "data-link.txt", "content": "updated"}),
    )
    .await
    .unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("real/data.txt")).unwrap(),
        "updated"
    );
}

#[tokio::test]
async fn limits_and_odd_files() {
    let f = fixture_with(|c| {
        c.max_read_bytes = 4;
        c.max_write_bytes = 8;
        c.max_list_entries = 2;
    });
    refused(
        call(&f.write, json!({"path": "big.txt", "content": "123456789"})).await,
        "at most 8",
    );
    assert!(!f.root.join("big.txt").exists());
    fs::write(f.root.join("long.txt"), "abcdefgh").unwrap();
    let out = call(&f.read, json!({"path": "long.txt"})).await.unwrap();
    assert_eq!(out["content"], "abcd");
    assert_eq!(out["truncated"], true);
    assert_eq!(out["size"], 8);
    fs::write(f.root.join("utf8.txt"), "ééé").unwrap();
    let out = call(&f.read, json!({"path": "utf8.txt"})).await.unwrap();
    assert_eq!(out["content"], "éé");
    fs::write(f.root.join("bin.dat"), [0xff, 0xfe, 0x00]).unwrap();
    refused(
        call(&f.read, json!({"path": "bin.dat"})).await,
        "not a UTF-8 text file",
    );
    let out = call(&f.list, json!({"path": "."})).await.unwrap();
    assert_eq!(out["truncated"], true);
    assert_eq!(out["entries"].as_array().unwrap().len(), 2);

    fs::create_dir(f.root.join("dir")).unwrap();
    refused(
        call(&f.read, json!({"path": "dir"})).await,
        "is a directory",
    );
    refused(
        call(&f.write, json!({"path": "dir", "content": "x"})).await,
        "is a directory",
    );
    refused(
        call(&f.list, json!({"path": "long.txt"})).await,
        "not a directory",
    );
    refused(
        call(&f.read, json!({"path": "nope.txt"})).await,
        "does not exist",
    );
    refused(
        call(&f.write, json!({"path": "", "content": "x"})).await,
        "empty",
    );
    refused(
        call(&f.write, json!({"path": "long.txt/x", "content": "x"})).await,
        "not a directory",
    );
}

#[test]
fn sandbox_root_must_exist() {
    let err = Sandbox::new(FilesConfig::new("/definitely/not/here")).unwrap_err();
    assert!(err.contains("/definitely/not/here"), "{err}");
}
