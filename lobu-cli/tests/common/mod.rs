//! Helpers of the `lobu` command's tests: running the binary, filling stores.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use lobu_core::export::Exported;
use lobu_core::transcript::TranscriptWriter;
use lobu_core::{Backend, ConversationKey, RunId, Version};
use lobu_store_file::FileStore;

/// The `lobu` binary with `args`, run to its end.
pub(crate) fn lobu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lobu"))
        .args(args)
        .env_remove("LOBU_STORE")
        .output()
        .expect("the lobu binary runs")
}

/// Standard output of a run that must succeed.
pub(crate) fn lobu_ok(args: &[&str]) -> String {
    let out = lobu(args);
    assert!(
        out.status.success(),
        "lobu {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Standard error of a run that must fail with status 1.
pub(crate) fn lobu_err(args: &[&str]) -> String {
    let out = lobu(args);
    assert_eq!(out.status.code(), Some(1), "lobu {args:?}: {out:?}");
    String::from_utf8(out.stderr).expect("UTF-8 errors")
}

/// `file:DIR`.
pub(crate) fn file_url(dir: &Path) -> String {
    format!("file:{}", dir.display())
}

/// A transcript of `turns` exchanges with text that exercises encodings.
pub(crate) fn transcript(title: &str, turns: usize) -> Vec<u8> {
    let mut writer = TranscriptWriter::new("/work");
    for turn in 0..turns {
        writer
            .user_text(&format!(
                "{title} — turn {turn}: Grüße, 東京, 🦀, \"quoted\"\\"
            ))
            .expect("user text");
        let reply = lobu_core::transcript::AssistantMessage::new(
            "demo",
            "echo",
            vec![lobu_core::transcript::ContentBlock::text(format!(
                "answer {turn}\r\nline two"
            ))],
        );
        writer.assistant(&reply).expect("assistant");
    }
    writer.as_slice().to_vec()
}

/// A conversation to import, as if exported from elsewhere.
pub(crate) fn conversation(key: ConversationKey, version: u64, turns: usize) -> Exported {
    let title = key.conversation.to_string();
    Exported::new(
        key,
        Version(version),
        RunId::generate(),
        UNIX_EPOCH + Duration::from_micros(1_764_524_930_000_000 + version),
        transcript(&title, turns),
    )
}

/// Import `conversations` into `backend`; each must be written.
pub(crate) async fn fill(backend: &Backend, conversations: &[Exported]) {
    for c in conversations {
        let imported = backend.sessions.import(c).await.expect("import");
        assert!(matches!(imported, lobu_core::export::Imported::Written(_)));
    }
}

/// A file store at `dir` (fsync off: tests need no power-loss durability).
pub(crate) async fn file_store(dir: &Path) -> Backend {
    FileStore::open(dir)
        .await
        .expect("file store")
        .with_fsync(false)
        .into_backend()
}

/// A key.
pub(crate) fn key(org: &str, agent: &str, conversation: &str) -> ConversationKey {
    ConversationKey::parse(org, agent, conversation).expect("key")
}

/// `DATABASE_URL` with its database replaced by `name` (the one `#[sqlx::test]` made).
pub(crate) fn database_url(name: &str) -> String {
    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for PostgreSQL tests");
    let base = admin.split('?').next().unwrap_or(&admin);
    let host_end = base
        .rfind('/')
        .filter(|i| *i > "postgres://".len())
        .unwrap_or(base.len());
    format!("{}/{name}", &base[..host_end])
}
