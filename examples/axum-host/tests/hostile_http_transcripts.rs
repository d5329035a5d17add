//! Hostile transcripts already in the store (written by another process with its own
//! lease: a torn last line, invalid UTF-8, JSON nested 100 000 deep, a header only, nothing
//! at all) are served over HTTP with the malformed lines skipped, never as a 5xx, and
//! reading them changes no byte of the store.

mod common;

use bytes::Bytes;
use common::dump::{settled_store_bytes, store_bytes};
use common::{Api, Data, Store, TestHost};
use lobu_core::testkit::hostile::assert_unchanged;
use lobu_core::{Backend, ConversationKey, Persist, RunId, TerminalStatus};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// A second handle on the server's store, as another process would open it.
async fn another_handle(data: &Data) -> Backend {
    match data {
        Data::File(dir) => lobu_store_file::FileStore::open(dir.path().join("lobu-data"))
            .await
            .expect("open the file store")
            .into_backend(),
        Data::Pg(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            lobu_store_pg::PgStore::new(pool).into_backend()
        }
    }
}

async fn write(backend: &Backend, conversation: &str, transcript: &[u8]) {
    let key = ConversationKey::parse("default", "demo", conversation).unwrap();
    let lease = backend
        .locks
        .try_acquire(&key, Duration::from_secs(60))
        .await;
    let lease = lease.expect("acquire").expect("free");
    let persist = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Completed,
        transcript: Bytes::copy_from_slice(transcript),
        expected: None,
        fence: lease.fence,
        base_len: None,
    };
    backend
        .sessions
        .persist(&key, persist)
        .await
        .expect("persist");
    backend.locks.release(&lease).await.expect("release");
}

fn line(id: &str, role: &str, text: &str) -> String {
    let entry = json!({"type": "message", "id": id, "message": {"role": role, "content": text}});
    format!("{entry}\n")
}

async fn hostile_stored_transcripts_are_served_with_bad_lines_skipped(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let backend = another_handle(&t.data).await;
    let header = "{\"type\":\"session\",\"version\":3,\"id\":\"s-1\"}\n";
    let good = format!(
        "{header}{}{}",
        line("u1", "user", "hello"),
        line("a1", "assistant", "hi")
    );
    let mut torn = good.clone().into_bytes();
    torn.extend_from_slice(br#"{"type":"message","id":"u2","message":{"ro"#);
    let mut not_utf8 = good.clone().into_bytes();
    not_utf8.extend_from_slice(b"{\"type\":\"message\",\"id\":\"\xff\"}\n\xc3\x28\n");
    let mut nested = good.clone().into_bytes();
    nested.extend_from_slice(br#"{"type":"message","deep":"#);
    nested.resize(nested.len() + 100_000, b'[');
    nested.resize(nested.len() + 100_000, b']');
    nested.extend_from_slice(b"}\n");
    // (conversation, bytes, messages shown, session id)
    let cases: [(&str, Vec<u8>, usize, &str); 5] = [
        ("torn", torn, 2, "s-1"),
        ("not-utf8", not_utf8, 2, "s-1"),
        ("nested", nested, 2, "s-1"),
        ("header-only", header.as_bytes().to_vec(), 0, "s-1"),
        ("empty", Vec::new(), 0, "none"),
    ];
    for (conversation, bytes, _, _) in &cases {
        write(&backend, conversation, bytes).await;
    }
    let before = settled_store_bytes(&t).await;
    for (conversation, _, shown, session) in &cases {
        let base = Api::conversation("demo", conversation);
        let page = api.get(&format!("{base}/session/messages?limit=1")).await;
        assert_eq!(page.status, StatusCode::OK, "{conversation}: {page:?}");
        assert_eq!(page.json["sessionId"], *session, "{conversation}");
        let messages = api.history("demo", conversation).await;
        assert_eq!(messages.len(), *shown, "{conversation}");
        let stats = api.get(&format!("{base}/session/stats")).await;
        assert_eq!(stats.status, StatusCode::OK, "{conversation}: {stats:?}");
        assert_eq!(stats.json["messageCount"], *shown as u64, "{conversation}");
    }
    let listed = api.get("/v1/agents/demo/conversations").await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(
        listed.json["conversations"].as_array().unwrap().len(),
        cases.len()
    );
    assert_unchanged(
        &before,
        &store_bytes(&t.data).await,
        "reading hostile transcripts",
    );
    // A turn on top of a torn transcript works; the reader skips the torn line.
    api.turn("demo", "torn", "after the tear").await;
    assert_eq!(api.lines("demo", "torn").await.len(), 4);
    t.finish().await;
}

on_both_stores!(hostile_stored_transcripts_are_served_with_bad_lines_skipped);
