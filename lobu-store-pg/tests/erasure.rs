//! Erasure on PostgreSQL beyond the conformance clause: after an org is erased, no row of
//! any table of the store's schema holds its ids or its bytes, another org's rows are
//! exactly what they were, and a claim or lease taken before the erasure is refused after it.
//! Each test on a fresh database.

#[path = "support/dump.rs"]
mod dump;
mod support;

use bytes::Bytes;
use dump::PgRows;
use lobu_core::testkit::hostile::{StoreBytes, StoreDump};
use lobu_core::{
    Claim, Commit, ConversationKey, ConversationLocks, EraseScope, ErasureReport, ErrorKind,
    Failure, IdempotencyKey, NewRun, Retry, RunId, RunQueue, SessionStore, TerminalStatus,
    WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, assert_kind, exchange, key, lease, write, writer};

/// In the erased org's id, its conversation ids, payloads, events, errors and transcripts.
const MARKER: &str = "erasure-marker-7f3a";

/// A transcript of a few realistic exchanges whose user message carries `text`.
fn transcript(text: &str) -> Bytes {
    let mut w = writer();
    exchange(&mut w, 1);
    w.user_text(&format!("please forget {text}"))
        .expect("user text");
    exchange(&mut w, 2);
    w.bytes()
}

async fn submit(store: &PgStore, key: &ConversationKey, text: &str, idempotency: bool) -> RunId {
    let mut run = NewRun::turn(key.clone(), json!({ "text": text }));
    if idempotency {
        run.idempotency_key = Some(IdempotencyKey::new(format!("{text}-retry")).expect("key"));
    }
    store.submit(run).await.expect("submit").run
}

/// Claims the only claimable run, which must be `run`, and records one event naming `text`.
async fn claim_with_event(store: &PgStore, run: &RunId, text: &str) -> Claim {
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("a claimable run");
    assert_eq!(&claim.run, run, "runs are claimed one at a time here");
    let event = json!({ "type": "output", "text": text }).to_string();
    store
        .record_events(&claim, &[event])
        .await
        .expect("record events");
    claim
}

/// Everything that finishes in `org`: a completed turn (idempotency key, event, transcript),
/// a failed run (event, error text) and a forensic copy of a failed turn.
async fn finished_work(store: &PgStore, org: &str, text: &str) {
    let chat = key(org, "bot", &format!("{text}-chat"));
    let run = submit(store, &chat, text, true).await;
    let claim = claim_with_event(store, &run, text).await;
    let commit = Commit::transcript(transcript(text), None);
    store.complete(&claim, commit).await.expect("complete");

    let failing = key(org, "bot", &format!("{text}-failing"));
    let run = submit(store, &failing, text, false).await;
    let claim = claim_with_event(store, &run, text).await;
    let failure = Failure::new(TerminalStatus::Failed, format!("{text} broke")).retry(Retry::Never);
    store.fail(&claim, &failure).await.expect("fail");

    let held = lease(store, &chat).await;
    let bytes = transcript(&format!("{text} crashed"));
    let forensic = write(
        &held,
        &RunId::generate(),
        TerminalStatus::Failed,
        &bytes,
        None,
    );
    store.persist(&chat, forensic).await.expect("forensic copy");
    ConversationLocks::release(store, &held)
        .await
        .expect("release");
}

/// Rows whose JSON text holds `needle` as text, or as the hex `to_jsonb` gives a `bytea`.
fn holding(rows: &StoreBytes, needle: &str) -> Vec<String> {
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    rows.keys()
        .filter(|row| row.contains(needle) || row.contains(&hex))
        .cloned()
        .collect()
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_erased_org_leaves_no_row_holding_its_ids_or_bytes_and_other_orgs_untouched(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    let rows = PgRows::new(pool);
    let org = MARKER;
    finished_work(&store, org, MARKER).await;
    finished_work(&store, "bystander", "kept").await;
    // Left unfinished: a waiting run on each org and a lease held on a conversation with
    // nothing else stored.
    let waiting = submit(
        &store,
        &key(org, "bot", &format!("{MARKER}-chat")),
        MARKER,
        false,
    )
    .await;
    submit(&store, &key("bystander", "bot", "kept-chat"), "kept", false).await;
    let leased = key(org, "bot", &format!("{MARKER}-leased"));
    let held = lease(&store, &leased).await;

    let before = rows.dump().await;
    let marked = holding(&before, MARKER);
    for table in ["conversations", "snapshots", "runs", "run_events"] {
        assert!(
            marked
                .iter()
                .any(|row| row.starts_with(&format!("{table}: "))),
            "the dump sees the marker in {table}: {marked:#?}"
        );
    }
    let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        marked
            .iter()
            .any(|row| row.starts_with("snapshots: ") && row.contains(&hex)),
        "the dump sees transcript bytes"
    );

    let report = store
        .erase(&EraseScope::Org(leased.org.clone()))
        .await
        .expect("erase the org");
    let expected = ErasureReport {
        conversations: 3,
        snapshots: 2,
        runs: 3,
        events: 2,
    };
    assert_eq!(report, expected, "chat, failing and leased conversations");

    let after = rows.dump().await;
    assert_eq!(holding(&after, MARKER), Vec::<String>::new());
    let mut kept = before;
    kept.retain(|row, _| !marked.contains(row));
    for table in ["conversations", "snapshots", "runs", "run_events"] {
        assert!(
            kept.keys()
                .any(|row| row.starts_with(&format!("{table}: "))),
            "the other org has rows in {table} to compare"
        );
    }
    assert_eq!(
        after, kept,
        "the other org's rows are byte for byte what they were"
    );
    assert!(
        store
            .status(&leased.org, &waiting)
            .await
            .expect("status")
            .is_none()
    );
    let stale = write(
        &held,
        &RunId::generate(),
        TerminalStatus::Completed,
        &transcript("x"),
        None,
    );
    assert_kind(
        store.persist(&leased, stale).await,
        ErrorKind::Fenced,
        "a lease taken before the erasure",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_claim_taken_before_its_conversation_is_erased_cannot_commit_and_the_key_starts_afresh(
    pool: PgPool,
) {
    let store = PgStore::new(pool);
    let chat = key("acme", "bot", "chat");
    let run = submit(&store, &chat, "hello", true).await;
    let claim = claim_with_event(&store, &run, "hello").await;
    let report = store
        .erase(&EraseScope::Conversation(chat.clone()))
        .await
        .expect("erase");
    let expected = ErasureReport {
        conversations: 1,
        snapshots: 0,
        runs: 1,
        events: 1,
    };
    assert_eq!(
        report, expected,
        "a running run, its event and its claimed row"
    );
    assert_kind(
        store
            .complete(&claim, Commit::transcript(transcript("hello"), None))
            .await,
        ErrorKind::NotFound,
        "a claim taken before the erasure",
    );
    assert!(store.hydrate(&chat).await.expect("hydrate").is_none());
    let again = submit(&store, &chat, "hello", true).await;
    assert_ne!(again, run, "the idempotency key was forgotten");
    let fresh = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("the new run");
    assert!(fresh.fence > claim.fence, "fences never go back");
    let nothing = store
        .erase(&EraseScope::Agent(
            chat.org.clone(),
            "nobody".parse().expect("agent"),
        ))
        .await
        .expect("erase nothing");
    assert_eq!(nothing, ErasureReport::default());
}
