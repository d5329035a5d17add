//! What only the file store promises about moving conversations and listing runs: an import
//! is on disk like any head, the scan sorts ids rather than their encoded directory names,
//! and damaged files are reported, never hidden and never fatal to a whole listing.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use lobu_core::export::MAX_IMPORT_VERSION;
use lobu_core::export::{Exported, Imported};
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, NewRun, RunFilter, RunId, RunQueue,
    SessionStore, Version, scan_cursor,
};
use lobu_store_file::FileStore;
use serde_json::{Value, json};

use common::{Fixture, LONG, tree, write};

const TRANSCRIPT: &str = concat!(
    "{\"type\":\"session\",\"version\":3,\"id\":\"s\"}\n",
    "{\"type\":\"message\",\"message\":{\"role\":\"user\",\"content\":\"Moving house\"}}\n",
);

fn exported(key: &ConversationKey, version: u64) -> Exported {
    Exported::new(
        key.clone(),
        Version(version),
        RunId::generate(),
        UNIX_EPOCH + Duration::from_nanos(1_764_524_930_123_456_789),
        Bytes::from_static(TRANSCRIPT.as_bytes()),
    )
}

#[tokio::test]
async fn an_imported_conversation_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = ConversationKey::parse("acme", "bot", "telegram:42").unwrap();
    let doc = exported(&key, 41);
    {
        let store = FileStore::open(dir.path()).await.unwrap();
        let imported = store.import(&doc).await.unwrap();
        assert_eq!(imported, Imported::Written(Version(41)));
    }
    let store = FileStore::open(dir.path()).await.unwrap();
    assert_eq!(store.export(&key).await.unwrap(), Some(doc.clone()));
    let head = store.hydrate(&key).await.unwrap().unwrap();
    assert_eq!((head.version, &head.run), (Version(41), &doc.run));
    let page = store.list(&key.org, &key.agent, None, 10).await.unwrap();
    let listed = &page.items[0];
    assert_eq!((listed.updated_at, listed.turns), (doc.updated_at, 1));
    assert_eq!(listed.title.as_deref(), Some("Moving house"));
    // On disk like any head: the transcript byte for byte, its commit record, one history
    // line, the write time to the microsecond.
    let conversation = store.conversation_dir(&key);
    assert_eq!(
        std::fs::read(store.transcript_path(&key).unwrap().unwrap()).unwrap(),
        TRANSCRIPT.as_bytes()
    );
    let state: Value = serde_json::from_slice(
        &lobu_store_file::read_record(conversation.join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["last_version"], 41);
    assert_eq!(state["head"]["written_at"], "2025-11-30T17:48:50.123456Z");
    let history = std::fs::read_to_string(conversation.join("history.jsonl")).unwrap();
    let line: Value = serde_json::from_str(history.trim_end()).unwrap();
    assert_eq!(
        (&line["version"], &line["run"]),
        (&json!(41), &json!(doc.run))
    );
    assert_eq!(
        store.import(&doc).await.unwrap(),
        Imported::Unchanged(Version(41))
    );
    // The next turn appends to the imported transcript, above its version.
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let next = Bytes::from(format!("{TRANSCRIPT}{{\"type\":\"message\"}}\n"));
    let write = write(&RunId::generate(), &next, Some(Version(41)), lease.fence);
    assert_eq!(store.persist(&key, write).await.unwrap(), Version(42));
}

#[tokio::test]
async fn scan_orders_by_the_ids_not_by_their_encoded_directory_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    // `:` (0x3A) sorts after `0` (0x30), but its encoding `%3A` sorts before; long ids are
    // split into directory levels.
    let long_org = "é".repeat(120);
    let long_conversation = format!("c{}", "✓".repeat(170));
    let mut keys = Vec::new();
    for org in ["a:b", "a0", long_org.as_str()] {
        for agent in ["bot", "Bot", "bot-2"] {
            for conversation in ["c:1", "c0", "c", long_conversation.as_str()] {
                keys.push(ConversationKey::parse(org, agent, conversation).unwrap());
            }
        }
    }
    for key in &keys {
        store.import(&exported(key, 1)).await.unwrap();
    }
    keys.sort_by(|x, y| {
        let ids = |k: &ConversationKey| {
            let (o, a, c) = (k.org.as_str(), k.agent.as_str(), k.conversation.as_str());
            (o.to_owned(), a.to_owned(), c.to_owned())
        };
        ids(x).cmp(&ids(y))
    });
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = store.scan(cursor.as_deref(), 5).await.unwrap();
        seen.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, keys);
    // Any key is a cursor, whether or not it is stored.
    let between = ConversationKey::parse("a:b", "bot", "c5").unwrap();
    let page = store.scan(Some(&scan_cursor(&between)), 1).await.unwrap();
    assert_eq!(page.items[0].conversation.as_str(), "c:1");
}

#[tokio::test]
async fn a_conversation_whose_state_record_is_damaged_is_scanned_and_its_export_is_corrupt() {
    let fx = Fixture::new().await;
    let healthy = ConversationKey::parse("acme", "bot", "c2").unwrap();
    fx.store.import(&exported(&healthy, 3)).await.unwrap();
    let state = fx.store.conversation_dir(&fx.key).join("state.json");
    std::fs::write(&state, b"{\"format\":1,").unwrap();
    let page = fx.store.scan(None, 10).await.unwrap();
    assert_eq!(page.items, vec![fx.key.clone(), healthy.clone()]);
    let err = fx.store.export(&fx.key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let err = fx.store.import(&exported(&fx.key, 9)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(fx.store.export(&healthy).await.unwrap().is_some());
}

#[tokio::test]
async fn a_damaged_run_record_is_skipped_by_the_listing_and_its_status_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let mut runs = Vec::new();
    for n in 0..4 {
        let run = NewRun::turn(key.clone(), json!({ "n": n }));
        runs.push(store.submit(run).await.unwrap().run);
    }
    runs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let damaged = runs.remove(1);
    let record = dir.path().join("queue/runs").join(damaged.as_str());
    std::fs::write(&record, b"{\"format\":1,\"seq\"").unwrap();

    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = store
            .runs(&key.org, &RunFilter::all(), cursor.as_deref(), 2)
            .await
            .unwrap();
        listed.extend(page.items.into_iter().map(|r| r.run));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, runs, "every other run, in id order");
    let err = store.status(&key.org, &damaged).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[tokio::test]
async fn a_refused_import_changes_no_file() {
    let fx = Fixture::new().await;
    let before = tree(fx.dir.path());
    let other_head = exported(&fx.key, fx.head.0);
    let result = fx.store.import(&other_head).await;
    fx.refused(&before, ErrorKind::Conflict, "over another head", result)
        .await;
    let new = ConversationKey::parse("acme", "bot", "new").unwrap();
    let zero = exported(&new, 0);
    let result = fx.store.import(&zero).await;
    fx.refused(&before, ErrorKind::InvalidInput, "version 0", result)
        .await;
    let mut big = exported(&new, 1);
    big.transcript = Bytes::from(vec![b'x'; 1025]);
    let result = fx.store.import(&big).await;
    fx.refused(&before, ErrorKind::TooLarge, "too large", result)
        .await;
    assert!(
        !fx.store.conversation_dir(&new).exists(),
        "no directory for a refused import"
    );
}

#[tokio::test]
async fn a_conversation_imported_at_the_largest_version_takes_further_turns() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let doc = exported(&key, MAX_IMPORT_VERSION);
    let imported = store.import(&doc).await.unwrap();
    assert_eq!(imported, Imported::Written(Version(MAX_IMPORT_VERSION)));
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let next = Bytes::from(format!("{TRANSCRIPT}{{\"type\":\"message\"}}\n"));
    let write = write(
        &RunId::generate(),
        &next,
        Some(Version(MAX_IMPORT_VERSION)),
        lease.fence,
    );
    let version = store.persist(&key, write).await.unwrap();
    assert!(version > Version(MAX_IMPORT_VERSION));
    let too_far = exported(
        &ConversationKey::parse("acme", "bot", "c2").unwrap(),
        u64::MAX,
    );
    let err = store.import(&too_far).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}
