//! Moving conversations on PostgreSQL (export, import, scan, runs) beyond the conformance
//! clauses: delta chains exported whole, the version sequence after an import, the
//! conversation's fence and lease left alone, imports racing turns, refusals that change no
//! row.

mod support;

#[path = "support/dump.rs"]
mod dump;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use dump::PgRows;
use lobu_core::export::{Exported, Imported};
use lobu_core::testkit::hostile::{StoreDump, assert_unchanged};
use lobu_core::transcript::hash::TranscriptHash;
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, Fence, NewRun, OrgId, Persist, RunFilter, RunId,
    RunQueue, SessionStore, TerminalStatus, Version, scan_cursor,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, assert_kind, exchange, key, lease, turn, write, writer};

/// A conversation to import: `version`, a write time with microseconds, `bytes`.
fn exported(key: &ConversationKey, version: u64, bytes: &'static [u8]) -> Exported {
    Exported::new(
        key.clone(),
        Version(version),
        RunId::generate(),
        UNIX_EPOCH + Duration::from_micros(1_700_000_000_654_321),
        bytes,
    )
}

/// The conversation row's head chain: (deltas after the whole copy, head version).
async fn chain(pool: &PgPool, k: &ConversationKey) -> (i32, Option<i64>) {
    sqlx::query_as(
        "SELECT chain_deltas, head_seq FROM lobu.conversations \
         WHERE org = $1 AND agent = $2 AND conversation = $3",
    )
    .bind(k.org.as_str())
    .bind(k.agent.as_str())
    .bind(k.conversation.as_str())
    .fetch_one(pool)
    .await
    .expect("the conversation's row")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_import_of_a_long_delta_chain_exports_byte_for_byte(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let from = key("acme", "bot", "long");
    let held = lease(&store, &from).await;
    let mut w = writer();
    for n in 0..40 {
        exchange(&mut w, n);
    }
    let mut head = turn(&store, &held, None, &w.bytes()).await;
    for n in 40..60 {
        exchange(&mut w, n);
        head = turn(&store, &held, Some(head), &w.bytes()).await;
    }
    let (deltas, _) = chain(&pool, &from).await;
    assert!(deltas >= 10, "the head is a whole copy and {deltas} deltas");

    let out = store.export(&from).await.expect("export").expect("a head");
    assert_eq!((out.version, &out.transcript), (head, &w.bytes()));
    let to = key("other-org", "bot", "long");
    let moved = Exported {
        key: to.clone(),
        ..out.clone()
    };
    assert_eq!(
        store.import(&moved).await.expect("import"),
        Imported::Written(head)
    );
    let back = store.export(&to).await.expect("export").expect("a head");
    assert_eq!(back, moved, "same version, run, write time and bytes");
    assert_eq!(back.to_document(), moved.to_document());
    assert_eq!(
        chain(&pool, &to).await,
        (0, Some(i64::try_from(head.0).unwrap())),
        "stored as one whole copy"
    );
    let (digest, state): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT head_digest, head_state FROM lobu.conversations \
         WHERE org = $1 AND agent = $2 AND conversation = $3",
    )
    .bind(to.org.as_str())
    .bind(to.agent.as_str())
    .bind(to.conversation.as_str())
    .fetch_one(&pool)
    .await
    .expect("the imported head's digests");
    let hash = TranscriptHash::of(&out.transcript);
    assert_eq!((digest, state), (hash.digest().to_vec(), hash.state()));
    // The imported head takes an append (only the new bytes, hashed from the head's stored
    // hash state) as a delta, like any other head.
    let imported_lease = lease(&store, &to).await;
    let base_len = w.len();
    exchange(&mut w, 60);
    let append = Persist {
        transcript: w.bytes().slice(base_len..),
        base_len: Some(base_len),
        ..write(
            &imported_lease,
            &RunId::generate(),
            TerminalStatus::Completed,
            &Bytes::new(),
            Some(head),
        )
    };
    let next = store.persist(&to, append).await.expect("append");
    assert_eq!(chain(&pool, &to).await.0, 1);
    let hydrated = store.hydrate(&to).await.expect("hydrate").expect("a head");
    assert_eq!((hydrated.version, hydrated.transcript), (next, w.bytes()));
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_persist_after_an_import_of_version_a_million_gets_a_higher_version(pool: PgPool) {
    let store = PgStore::new(pool);
    let imported = key("acme", "bot", "imported");
    let doc = exported(&imported, 1_000_000, b"{\"type\":\"session\"}\n");
    assert_eq!(
        store.import(&doc).await.expect("import"),
        Imported::Written(Version(1_000_000))
    );
    // The sequence moved: every conversation's next version is above the import's.
    let elsewhere = key("acme", "bot", "elsewhere");
    let other = lease(&store, &elsewhere).await;
    let v = turn(&store, &other, None, &Bytes::from_static(b"{\"n\":1}\n")).await;
    assert!(v > Version(1_000_000), "{v}");
    let own = lease(&store, &imported).await;
    let grown = Bytes::from_static(b"{\"type\":\"session\"}\n{\"n\":2}\n");
    let next = turn(&store, &own, Some(Version(1_000_000)), &grown).await;
    assert!(next > v, "{next} after {v}");
    // A lower imported version never moves the sequence back.
    let low = exported(&key("acme", "bot", "low"), 3, b"{\"n\":3}\n");
    assert_eq!(
        store.import(&low).await.expect("import"),
        Imported::Written(Version(3))
    );
    let after = turn(
        &store,
        &other,
        Some(v),
        &Bytes::from_static(b"{\"n\":1}\n{\"n\":4}\n"),
    )
    .await;
    assert!(after > next, "{after} after {next}");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_import_leaves_the_conversations_fence_and_lease_alone(pool: PgPool) {
    let store = PgStore::new(pool);
    // A leased conversation with no head, where the store never issued a version: the
    // import keeps its version, and the lease still holds and writes above it.
    let leased = key("acme", "bot", "leased");
    let held = lease(&store, &leased).await;
    let doc = exported(&leased, 7, b"{\"n\":1}\n");
    assert_eq!(
        store.import(&doc).await.expect("import"),
        Imported::Written(Version(7))
    );
    assert!(
        store
            .try_acquire(&leased, LONG)
            .await
            .expect("acquire")
            .is_none(),
        "the lease is still live"
    );
    let grown = Bytes::from_static(b"{\"n\":1}\n{\"n\":2}\n");
    let next = turn(&store, &held, Some(Version(7)), &grown).await;
    assert!(next > Version(7));

    // A conversation the store never saw: no fence was issued by the import, so no write
    // gets through until a lease or claim takes it, and then one does.
    let fresh = key("acme", "bot", "fresh");
    store
        .import(&exported(&fresh, 4, b"{\"n\":1}\n"))
        .await
        .expect("import");
    for fence in [0, 1, u64::MAX] {
        let forged = Persist {
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            transcript: grown.clone(),
            expected: Some(Version(4)),
            fence: Fence(fence),
            base_len: None,
        };
        assert_kind(
            store.persist(&fresh, forged).await,
            ErrorKind::Fenced,
            "a fence never issued",
        );
        assert_kind(
            store.clear(&fresh, Fence(fence)).await,
            ErrorKind::Fenced,
            "a clear under a fence never issued",
        );
    }
    let taken = lease(&store, &fresh).await;
    let continued = turn(&store, &taken, Some(Version(4)), &grown).await;
    assert!(continued > Version(4));
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_import_racing_a_turn_on_the_same_conversation_leaves_one_head(pool: PgPool) {
    let store = PgStore::new(pool);
    for round in 0..8 {
        let k = key("acme", "bot", &format!("race-{round}"));
        let held = lease(&store, &k).await;
        let mine = Bytes::from_static(b"{\"by\":\"turn\"}\n");
        let run = RunId::generate();
        let persist = store.persist(
            &k,
            write(&held, &run, TerminalStatus::Completed, &mine, None),
        );
        let doc = exported(&k, 1_000 + round, b"{\"by\":\"import\"}\n");
        let import = store.import(&doc);
        let (persisted, imported) = tokio::join!(persist, import);
        let head = store.hydrate(&k).await.expect("hydrate").expect("a head");
        match (persisted, imported) {
            (Ok(v), Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                assert_eq!((head.version, head.run, head.transcript), (v, run, mine));
            }
            (Err(e), Ok(Imported::Written(v))) => {
                assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                assert_eq!((head.version, &head.transcript), (v, &doc.transcript));
                assert_eq!(head.run, doc.run);
            }
            other => panic!("round {round}: exactly one must win, got {other:?}"),
        }
    }
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_unchanged_or_refused_import_changes_no_row(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let rows = PgRows::new(pool);
    let k = key("acme", "bot", "once");
    let doc = exported(&k, 5, b"{\"n\":1}\n");
    store.import(&doc).await.expect("import");
    let before = rows.dump().await;
    assert_eq!(
        store.import(&doc).await.expect("again"),
        Imported::Unchanged(Version(5))
    );
    let other = Exported {
        transcript: Bytes::from_static(b"{\"n\":2}\n"),
        ..doc.clone()
    };
    assert_kind(
        store.import(&other).await,
        ErrorKind::Conflict,
        "another head",
    );
    let never_seen = key("acme", "bot", "never-seen");
    let zero = exported(&never_seen, 0, b"{\"n\":1}\n");
    assert_kind(
        store.import(&zero).await,
        ErrorKind::InvalidInput,
        "version 0",
    );
    let huge = exported(&never_seen, u64::MAX, b"{\"n\":1}\n");
    assert_kind(
        store.import(&huge).await,
        ErrorKind::InvalidInput,
        "no bigint",
    );
    assert_unchanged(&before, &rows.dump().await, "unchanged and refused imports");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn scan_orders_keys_byte_by_byte_as_rust_does(pool: PgPool) {
    let store = PgStore::new(pool);
    // Agent ids are ASCII ([A-Za-z0-9_-]); orgs and conversations may hold any text.
    let ids = [
        "b", "B", "a", "é", "z", "Z", "a b", "a/b", "日本", "😀", "ab", "_", "-",
    ];
    let agents = ["b", "B", "a", "z", "Z", "ab", "_", "-", "a-b"];
    let mut keys: Vec<ConversationKey> = ids
        .iter()
        .flat_map(|id| [key(id, "bot", "c"), key("org", "bot", id)])
        .chain(agents.iter().map(|agent| key("org", agent, "c")))
        .collect();
    keys.sort_by(|x, y| {
        let t = |k: &ConversationKey| {
            (
                k.org.to_string(),
                k.agent.to_string(),
                k.conversation.to_string(),
            )
        };
        t(x).cmp(&t(y))
    });
    keys.dedup();
    for k in &keys {
        store
            .import(&exported(k, 2, b"{\"n\":1}\n"))
            .await
            .expect("import");
    }
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = store.scan(cursor.as_deref(), 4).await.expect("scan");
        seen.extend(page.items.iter().cloned());
        match page.next_cursor {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(scan_cursor).as_ref());
                cursor = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, keys);
    let nul = serde_json::to_string(&("a\0", "", "")).unwrap();
    assert_kind(
        store.scan(Some(&nul), 4).await,
        ErrorKind::InvalidInput,
        "NUL",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn runs_pages_by_status_and_refuses_a_nul_cursor(pool: PgPool) {
    let store = PgStore::new(pool);
    let org = OrgId::new("acme").unwrap();
    let mut submitted = Vec::new();
    for n in 0..5 {
        let k = key("acme", "bot", &format!("c{n}"));
        let run = store
            .submit(NewRun::turn(k, json!({"n": n})))
            .await
            .expect("submit");
        submitted.push(run.run);
    }
    store
        .submit(NewRun::turn(key("other", "bot", "c"), json!({})))
        .await
        .expect("another org's run");
    submitted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let pending = RunFilter::unfinished();
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = store
            .runs(&org, &pending, cursor.as_deref(), 2)
            .await
            .expect("runs");
        seen.extend(page.items.iter().map(|r| r.run.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, submitted);
    let none = store
        .runs(&org, &RunFilter::failed(), None, 10)
        .await
        .expect("runs");
    assert!(none.items.is_empty() && none.next_cursor.is_none());
    assert_kind(
        store.runs(&org, &RunFilter::all(), Some("a\0"), 10).await,
        ErrorKind::InvalidInput,
        "NUL",
    );
}
