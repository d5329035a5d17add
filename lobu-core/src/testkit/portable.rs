//! Clauses of moving conversations: export, import, the store-wide scan, and listing runs.

use std::time::{Duration, UNIX_EPOCH};

use super::support::{
    LONG, acquire, assert_head, assert_kind, assert_no_head, claim_mine, clear, filler, fresh_key,
    new_turn, sibling, submit, transcript, turn,
};
use crate::backend::Backend;
use crate::control::{Failure, Retry};
use crate::error::ErrorKind;
use crate::export::{Exported, Imported, MAX_IMPORT_VERSION};
use crate::id::{AgentId, ConversationKey, RunId, WorkerId};
use crate::queue::{Commit, RunFilter};
use crate::session::{TerminalStatus, Version, scan_cursor, scan_cursor_at_org};

/// A conversation to import: `version`, a fixed write time, a transcript titled `title`.
fn exported(key: &ConversationKey, version: u64, title: &str) -> Exported {
    Exported::new(
        key.clone(),
        Version(version),
        RunId::generate(),
        UNIX_EPOCH + Duration::from_micros(1_764_524_930_123_456),
        transcript(title, 2),
    )
}

async fn import(backend: &Backend, conversation: &Exported) -> Imported {
    backend
        .sessions
        .import(conversation)
        .await
        .unwrap_or_else(|e| panic!("importing {}: {e}", conversation.key))
}

async fn export(backend: &Backend, key: &ConversationKey) -> Exported {
    backend
        .sessions
        .export(key)
        .await
        .expect("export")
        .unwrap_or_else(|| panic!("{key} exports nothing"))
}

/// A head exports with its version, run and bytes; imported under another key and exported
/// again it gives the same document (but for the key), and a fresh conversation keeps the
/// exported version, write time and run.
pub async fn an_export_imported_elsewhere_exports_the_same_document(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let bytes = transcript("portable", 3);
    let version = turn(backend, &lease, None, &bytes).await;
    let out = export(backend, &key).await;
    assert_eq!((out.version, &out.transcript), (version, &bytes));
    let head = backend.sessions.hydrate(&key).await.expect("hydrate");
    assert_eq!(Some(&out.run), head.as_ref().map(|h| &h.run));
    assert!(
        backend
            .sessions
            .export(&sibling(&key, "none"))
            .await
            .expect("export")
            .is_none()
    );

    let elsewhere = Exported {
        key: ConversationKey::new(fresh_key().org, key.agent.clone(), key.conversation.clone()),
        ..out.clone()
    };
    let imported = import(backend, &elsewhere).await;
    assert_eq!(imported, Imported::Written(version));
    let back = export(backend, &elsewhere.key).await;
    assert_eq!(back.to_document(), elsewhere.to_document());
    assert_head(backend, &elsewhere.key, version, &bytes).await;
}

/// Importing the same conversation again is `Unchanged`; a different transcript or run for
/// a conversation that has a head is `Conflict` and changes nothing.
pub async fn importing_again_is_unchanged_and_another_head_conflicts(backend: &Backend) {
    let key = fresh_key();
    let first = exported(&key, 5, "first");
    assert_eq!(import(backend, &first).await, Imported::Written(Version(5)));
    assert_eq!(
        import(backend, &first).await,
        Imported::Unchanged(Version(5))
    );
    let other_bytes = Exported {
        transcript: transcript("other", 2),
        ..first.clone()
    };
    let other_run = Exported {
        run: RunId::generate(),
        ..first.clone()
    };
    for other in [other_bytes, other_run] {
        let result = backend.sessions.import(&other).await;
        assert_kind(result, ErrorKind::Conflict, "import over another head");
    }
    assert_head(backend, &key, Version(5), &first.transcript).await;
}

/// An imported head is hydrated, listed with its write time and title, and the next turn
/// persists above its version.
pub async fn an_imported_head_is_served_and_continued_above_its_version(backend: &Backend) {
    let key = fresh_key();
    let conversation = exported(&key, 1_000_000, "imported title");
    assert_eq!(
        import(backend, &conversation).await,
        Imported::Written(Version(1_000_000))
    );
    assert_head(backend, &key, Version(1_000_000), &conversation.transcript).await;
    let page = backend
        .sessions
        .list(&key.org, &key.agent, None, 10)
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    let listed = &page.items[0];
    assert_eq!(listed.version, Version(1_000_000));
    assert_eq!(listed.updated_at, conversation.updated_at);
    assert_eq!(listed.title.as_deref(), Some("imported title"));
    let lease = acquire(backend, &key).await;
    let next = turn(
        backend,
        &lease,
        Some(Version(1_000_000)),
        &transcript("imported title", 3),
    )
    .await;
    assert!(next > Version(1_000_000), "{next} must be above the import");
}

/// A conversation that was cleared here never gets a version it had again: the import is
/// written at a fresh, higher one.
pub async fn an_import_never_reuses_a_version_the_conversation_had(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let old = turn(backend, &lease, None, &transcript("old", 1)).await;
    clear(backend, &key, lease.fence).await;
    backend.locks.release(&lease).await.expect("release");
    let conversation = exported(&key, old.0, "new");
    let Imported::Written(version) = import(backend, &conversation).await else {
        panic!("an import into a cleared conversation writes");
    };
    assert!(
        version > old,
        "{version} must be above {old}, which {key} had"
    );
    assert_head(backend, &key, version, &conversation.transcript).await;
}

/// A transcript over the size limit is `TooLarge`, a version out of `1..=2^53-1` is
/// `InvalidInput`; neither writes anything.
pub async fn bad_imports_are_typed_errors_and_write_nothing(backend: &Backend) {
    let key = fresh_key();
    let mut big = exported(&key, 3, "big");
    big.transcript = filler(backend.sessions.max_transcript_bytes() + 1);
    assert_kind(
        backend.sessions.import(&big).await,
        ErrorKind::TooLarge,
        "import too large",
    );
    for version in [0, MAX_IMPORT_VERSION + 1] {
        let out_of_range = exported(&key, version, "out of range");
        let result = backend.sessions.import(&out_of_range).await;
        assert_kind(result, ErrorKind::InvalidInput, "a version out of range");
    }
    assert_no_head(backend, &key).await;
}

/// `scan` pages through every org's conversations that have a head, ordered by org, agent
/// and conversation id; a bad cursor or limit is `InvalidInput`.
pub async fn scan_pages_through_every_orgs_conversations_in_key_order(backend: &Backend) {
    let (a, b) = (fresh_key(), fresh_key());
    let helper = AgentId::new("helper").expect("agent");
    let mut keys = vec![
        a.clone(),
        sibling(&a, "second"),
        sibling(&a, "a/slash and space"),
        ConversationKey::new(a.org.clone(), helper.clone(), a.conversation.clone()),
        b.clone(),
    ];
    for key in &keys {
        import(backend, &exported(key, 2, "scanned")).await;
    }
    // Conversations without a head are not scanned.
    let headless = sibling(&b, "headless");
    let lease = acquire(backend, &headless).await;
    turn(backend, &lease, None, &transcript("gone", 1)).await;
    clear(backend, &headless, lease.fence).await;
    submit(backend, new_turn(&sibling(&b, "queued"), 0, 1)).await;

    let mine = [&a.org, &b.org];
    keys.sort_by(|x, y| {
        let tuple = |k: &ConversationKey| {
            (
                k.org.to_string(),
                k.agent.to_string(),
                k.conversation.to_string(),
            )
        };
        tuple(x).cmp(&tuple(y))
    });
    let first_org = if a.org < b.org { &a.org } else { &b.org };
    let mut cursor = Some(scan_cursor_at_org(first_org));
    let mut seen = Vec::new();
    while let Some(after) = cursor.take() {
        let page = backend.sessions.scan(Some(&after), 2).await.expect("scan");
        assert!(page.items.len() <= 2);
        if let Some(next) = &page.next_cursor {
            assert_eq!(Some(next), page.items.last().map(scan_cursor).as_ref());
        }
        let leaving = page.items.iter().any(|k| !mine.contains(&&k.org));
        seen.extend(page.items.into_iter().filter(|k| mine.contains(&&k.org)));
        if !leaving {
            cursor = page.next_cursor;
        }
    }
    assert_eq!(
        seen, keys,
        "every conversation with a head, in key order, once"
    );
    for bad in ["", "not a cursor", "[1,2]"] {
        assert_kind(
            backend.sessions.scan(Some(bad), 2).await,
            ErrorKind::InvalidInput,
            bad,
        );
    }
    assert_kind(
        backend.sessions.scan(None, 0).await,
        ErrorKind::InvalidInput,
        "limit 0",
    );
    assert_kind(
        backend.sessions.scan(None, 201).await,
        ErrorKind::InvalidInput,
        "limit 201",
    );
}

/// `runs` lists an org's runs in run id order, filtered by state and agent, paged by
/// cursor; another org sees none of them.
pub async fn runs_lists_an_orgs_runs_by_state_and_agent_in_id_order(backend: &Backend) {
    let done = fresh_key();
    let failed = sibling(&done, "failed");
    let waiting = sibling(&done, "waiting");
    let helper = ConversationKey::new(
        done.org.clone(),
        AgentId::new("helper").expect("agent"),
        done.conversation.clone(),
    );
    let worker = WorkerId::generate();
    let done_run = submit(backend, new_turn(&done, 0, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&done]).await;
    let commit = Commit::transcript(transcript("done", 1), None);
    backend
        .queue
        .complete(&claim, commit)
        .await
        .expect("complete");
    let failed_run = submit(backend, new_turn(&failed, 0, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&failed]).await;
    let failure = Failure::new(TerminalStatus::Failed, "boom").retry(Retry::Never);
    backend.queue.fail(&claim, &failure).await.expect("fail");
    let waiting_run = submit(backend, new_turn(&waiting, 0, 3)).await;
    let helper_run = submit(backend, new_turn(&helper, 0, 3)).await;

    let ids = |filter: RunFilter| {
        let (queue, org) = (backend.queue.clone(), done.org.clone());
        async move {
            let page = queue.runs(&org, &filter, None, 200).await.expect("runs");
            assert_eq!(page.next_cursor, None);
            page.items.into_iter().map(|r| r.run).collect::<Vec<_>>()
        }
    };
    let sorted = |mut runs: Vec<RunId>| {
        runs.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        runs
    };
    let all = sorted(vec![
        done_run,
        failed_run.clone(),
        waiting_run.clone(),
        helper_run.clone(),
    ]);
    assert_eq!(ids(RunFilter::all()).await, all);
    assert_eq!(
        ids(RunFilter::unfinished()).await,
        sorted(vec![waiting_run.clone(), helper_run])
    );
    assert_eq!(ids(RunFilter::failed()).await, vec![failed_run]);
    let mine = RunFilter::unfinished().agent(done.agent.clone());
    assert_eq!(ids(mine).await, vec![waiting_run]);

    let mut cursor = None;
    let mut paged = Vec::new();
    loop {
        let page = backend
            .queue
            .runs(&done.org, &RunFilter::all(), cursor.as_deref(), 1)
            .await
            .expect("a page of runs");
        paged.extend(page.items.into_iter().map(|r| r.run));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let other = fresh_key().org;
    let none = backend
        .queue
        .runs(&other, &RunFilter::all(), None, 200)
        .await
        .expect("runs");
    assert!(none.items.is_empty());
    let result = backend
        .queue
        .runs(&done.org, &RunFilter::all(), None, 0)
        .await;
    assert_kind(result, ErrorKind::InvalidInput, "limit 0");
}
