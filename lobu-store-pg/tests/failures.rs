//! Lost connections and bad input: typed errors, never a panic, and nothing changed.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lobu_core::{
    Commit, ConversationLocks, ErrorKind, Failure, Fence, IdempotencyKey, Lease, NewRun, Persist,
    RunId, RunQueue, SessionStore, TerminalStatus, Version, WorkerId,
};
use lobu_store_pg::{PgStore, PgStoreError};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::{LONG, assert_kind, key, lease, turn, write};

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_closed_pool_is_unavailable_for_every_call(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "closed");
    let held = lease(&store, &k).await;
    // The run is another conversation's: a live lease makes its own conversation unclaimable.
    let run = store
        .submit(NewRun::turn(key("acme", "bot", "closed-run"), json!({})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("run");
    pool.close().await;

    let bytes = Bytes::from_static(b"{}\n");
    let w = write(
        &held,
        &RunId::generate(),
        TerminalStatus::Completed,
        &bytes,
        None,
    );
    let u = ErrorKind::Unavailable;
    assert_kind(store.hydrate(&k).await, u, "hydrate");
    assert_kind(store.head(&k).await, u, "head");
    assert_kind(store.persist(&k, w).await, u, "persist");
    assert_kind(store.clear(&k, held.fence).await, u, "clear");
    assert_kind(store.list(&k.org, &k.agent, None, 10).await, u, "list");
    assert_kind(store.prune(SystemTime::now()).await, u, "prune");
    assert_kind(store.try_acquire(&k, LONG).await, u, "try_acquire");
    assert_kind(store.renew(&held, LONG).await, u, "renew");
    assert_kind(
        ConversationLocks::release(&store, &held).await,
        u,
        "release",
    );
    assert_kind(
        store.submit(NewRun::turn(k.clone(), json!({}))).await,
        u,
        "submit",
    );
    assert_kind(store.claim(&WorkerId::generate(), LONG).await, u, "claim");
    assert_kind(store.heartbeat(&claim, LONG).await, u, "heartbeat");
    assert_kind(
        store.complete(&claim, Commit::output(None)).await,
        u,
        "complete",
    );
    assert_kind(store.status(&k.org, &run.run).await, u, "status");
    assert_kind(store.depth().await, u, "depth");
    assert_kind(store.prune_runs(SystemTime::now()).await, u, "prune_runs");
    let events = ["{}".to_owned()];
    assert_kind(
        store.record_events(&claim, &events).await,
        u,
        "record_events",
    );
    assert_kind(
        store.read_events(&k.org, &run.run, 0, 10).await,
        u,
        "read_events",
    );
    assert_kind(
        store.prune_events(SystemTime::now()).await,
        u,
        "prune_events",
    );

    // The source is kept: our error, then sqlx's.
    let err = store.hydrate(&k).await.expect_err("closed");
    let ours = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<PgStoreError>());
    assert!(
        matches!(
            ours,
            Some(PgStoreError::Database {
                source: sqlx::Error::PoolClosed,
                ..
            })
        ),
        "{ours:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn an_unreachable_server_is_unavailable(pool: PgPool) {
    let nowhere = (*pool.connect_options()).clone().port(1);
    let unreachable = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(nowhere);
    let store = PgStore::new(unreachable);
    let k = key("acme", "bot", "nowhere");
    assert_kind(store.hydrate(&k).await, ErrorKind::Unavailable, "hydrate");
    assert_kind(store.migrate().await, ErrorKind::Unavailable, "migrate");
    assert_kind(
        store.try_acquire(&k, LONG).await,
        ErrorKind::Unavailable,
        "acquire",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn killed_connections_are_unavailable_or_replaced_never_a_panic(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "killed");
    let held = lease(&store, &k).await;
    let v = turn(&store, &held, None, &Bytes::from_static(b"{\"n\":1}\n")).await;
    let killer = support::replica_pool(&pool, 1).await;
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE datname = current_database() AND pid <> pg_backend_pid()";
    for _ in 0..3 {
        sqlx::query(kill)
            .execute(&killer)
            .await
            .expect("terminate backends");
        match store.hydrate(&k).await {
            Ok(head) => assert_eq!(head.expect("head").version, v),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
        }
    }
    // Once the pool has replaced its connections, everything works again.
    let head = store.hydrate(&k).await.expect("hydrate after reconnecting");
    assert_eq!(head.expect("head").version, v);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn bad_input_is_a_typed_error_and_changes_nothing(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "bad-input");
    let held = lease(&store, &k).await;
    let bytes = Bytes::from_static(b"{\"n\":1}\n");
    let v = turn(&store, &held, None, &bytes).await;
    let completed = |fence, expected| Persist {
        fence,
        ..write(
            &held,
            &RunId::generate(),
            TerminalStatus::Completed,
            &bytes,
            expected,
        )
    };
    let huge = Fence(u64::MAX);
    assert_kind(
        store.persist(&k, completed(huge, Some(v))).await,
        ErrorKind::Fenced,
        "fence",
    );
    let never = Version(u64::MAX);
    assert_kind(
        store.persist(&k, completed(held.fence, Some(never))).await,
        ErrorKind::Conflict,
        "version",
    );
    let forged = Lease {
        fence: huge,
        ..held.clone()
    };
    assert_kind(
        store.renew(&forged, LONG).await,
        ErrorKind::Fenced,
        "renew a forged fence",
    );
    ConversationLocks::release(&store, &forged)
        .await
        .expect("releasing a forged fence is a no-op");
    assert!(
        store
            .try_acquire(&k, LONG)
            .await
            .expect("acquire")
            .is_none(),
        "still held"
    );
    let cursor = store.list(&k.org, &k.agent, Some("a\0b"), 10).await;
    assert_kind(cursor, ErrorKind::InvalidInput, "a NUL in the cursor");
    assert_eq!(
        store
            .hydrate(&k)
            .await
            .expect("hydrate")
            .expect("head")
            .version,
        v
    );

    // JSON that PostgreSQL's jsonb cannot hold (`\u0000`) is refused, and stores nothing.
    let mut nul = NewRun::turn(k.clone(), json!({"text": "a\u{0}b"}));
    nul.idempotency_key = Some(IdempotencyKey::new("nul").expect("key"));
    assert_kind(
        store.submit(nul).await,
        ErrorKind::InvalidInput,
        "a NUL in the payload",
    );
    assert_eq!(store.depth().await.expect("depth"), 0);
    // A live lease makes its conversation unclaimable: give it up for the queue checks.
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    let fine = store
        .submit(NewRun::turn(k.clone(), json!({})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("run");
    let output = Some(json!({"text": "\u{0}"}));
    assert_kind(
        store.complete(&claim, Commit::output(output)).await,
        ErrorKind::InvalidInput,
        "NUL output",
    );
    let record = store
        .status(&k.org, &fine.run)
        .await
        .expect("status")
        .expect("run");
    assert_eq!(
        record.status,
        lobu_core::RunStatus::Running,
        "the run is still claimed"
    );
    // A failure message is diagnostics: NUL is replaced rather than losing the failure.
    store
        .fail(&claim, &Failure::new(TerminalStatus::Failed, "boom\0"))
        .await
        .expect("fail");
    let record = store
        .status(&k.org, &fine.run)
        .await
        .expect("status")
        .expect("run");
    assert_eq!(record.error.as_deref(), Some("boom\u{FFFD}"));
    let never = lobu_core::Claim {
        fence: Fence(u64::MAX),
        ..claim
    };
    assert_kind(
        store.heartbeat(&never, LONG).await,
        ErrorKind::Fenced,
        "a fence never issued",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_pool_without_prepared_statements_works_as_behind_a_pooler(pool: PgPool) {
    let options = (*pool.connect_options())
        .clone()
        .statement_cache_capacity(0);
    let pooled = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("pool");
    let store = PgStore::new(pooled);
    let k = key("acme", "bot", "pooled");
    let held = lease(&store, &k).await;
    let v1 = turn(&store, &held, None, &Bytes::from_static(b"{\"n\":1}\n")).await;
    let v2 = turn(
        &store,
        &held,
        Some(v1),
        &Bytes::from_static(b"{\"n\":1}\n{\"n\":2}\n"),
    )
    .await;
    assert_eq!(
        store
            .hydrate(&k)
            .await
            .expect("hydrate")
            .expect("head")
            .version,
        v2
    );
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    store
        .submit(NewRun::turn(k.clone(), json!({})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("run");
    assert_eq!(claim.head, Some(v2));
    store.heartbeat(&claim, LONG).await.expect("heartbeat");
    let v3 = store
        .complete(
            &claim,
            Commit {
                output: Some(json!({"ok": true})),
                ..Commit::transcript(
                    Bytes::from_static(b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"),
                    Some(v2),
                )
            },
        )
        .await
        .expect("complete");
    assert!(v3 > Some(v2));
    assert_eq!(store.clear(&k, claim.fence).await.expect("clear"), 3);
}

/// The parse error behind a `Corrupt` read: our error, then lobu's `InvalidInput` from the
/// parser, kept rather than flattened into the message.
fn parse_error(e: &lobu_core::Error, what: &str) -> ErrorKind {
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
    let ours = std::error::Error::source(e).and_then(|s| s.downcast_ref::<PgStoreError>());
    let Some(PgStoreError::Unparsable { source, .. }) = ours else {
        panic!("{what}: the parse error was not kept: {ours:?}");
    };
    source.kind()
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn stored_values_that_no_longer_parse_are_corrupt_and_keep_the_parse_error(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let bytes = Bytes::from_static(b"{\"n\":1}\n");
    let k = key("acme", "bot", "damaged");
    let held = lease(&store, &k).await;
    turn(&store, &held, None, &bytes).await;
    let run = store
        .submit(NewRun::turn(k.clone(), json!({})))
        .await
        .expect("submit");
    // Damage behind the store's back: values it validated on the way in no longer parse.
    for damage in [
        "UPDATE lobu.conversations SET head_run = '' WHERE conversation = 'damaged'",
        "UPDATE lobu.runs SET conversation = '' WHERE conversation = 'damaged'",
        // The run's lane goes with it, as the run queue keeps them together.
        "UPDATE lobu.lanes SET conversation = '' WHERE conversation = 'damaged'",
    ] {
        sqlx::query(damage).execute(&pool).await.expect(damage);
    }

    let e = store.hydrate(&k).await.expect_err("an empty head run id");
    assert_eq!(parse_error(&e, "hydrate"), ErrorKind::InvalidInput);
    let e = store
        .status(&k.org, &run.run)
        .await
        .expect_err("an empty conversation id");
    assert_eq!(parse_error(&e, "status"), ErrorKind::InvalidInput);
    let e = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect_err("an empty conversation id");
    assert_eq!(parse_error(&e, "claim"), ErrorKind::InvalidInput);

    // The claim took the damaged run's conversation (id '') before its id failed to parse:
    // drop that row so the next damage does not collide with it.
    sqlx::query("DELETE FROM lobu.conversations WHERE conversation = ''")
        .execute(&pool)
        .await
        .expect("drop the claimed row");
    sqlx::query("UPDATE lobu.conversations SET conversation = '' WHERE conversation = 'damaged'")
        .execute(&pool)
        .await
        .expect("an empty conversation id");
    let e = store
        .list(&k.org, &k.agent, None, 10)
        .await
        .expect_err("an empty conversation id");
    assert_eq!(parse_error(&e, "list"), ErrorKind::InvalidInput);
}
