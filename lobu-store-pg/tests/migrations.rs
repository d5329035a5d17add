//! Migrations: lobu's own schema and tracking table, any schema name, replicas migrating at
//! once, a host application's migrations beside ours, and a bounded wait for the lock.

mod support;

use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, NewRun, RunId, RunQueue, SessionStore,
    TerminalStatus, Version,
};
use lobu_store_pg::{MIGRATOR, PgStore, PgStoreConfig};
use serde_json::json;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgPool, SqlSafeStr};
use support::{
    assert_kind, claim_before_v8, key, lease, release_before, replica_pool, submit_before_v7, turn,
    write,
};

/// The tables of `schema`, sorted.
async fn tables(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("list tables")
}

async fn applied(pool: &PgPool, table: &str) -> Vec<(i64, bool)> {
    let sql = format!("SELECT version, success FROM {table} ORDER BY version");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .expect("read the tracking table")
}

fn ours() -> Vec<(i64, bool)> {
    MIGRATOR.iter().map(|m| (m.version, true)).collect()
}

/// A host application's migrator: its own migration, in the default `_sqlx_migrations`.
fn host_migrator(sql: &'static str) -> Migrator {
    let create = Migration::new(
        1,
        "host users".into(),
        MigrationType::Simple,
        sql.into_sql_str(),
        false,
    );
    Migrator::with_migrations(vec![create])
}

#[sqlx::test(migrations = false)]
async fn replicas_migrating_at_once_all_succeed_and_apply_each_migration_once(pool: PgPool) {
    let mut replicas = Vec::new();
    for _ in 0..6 {
        replicas.push(PgStore::new(replica_pool(&pool, 2).await));
    }
    let results = futures::future::join_all(replicas.iter().map(PgStore::migrate)).await;
    for (n, result) in results.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("replica {n} failed to migrate: {e}"));
    }
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());
    assert_eq!(
        tables(&pool, "lobu").await,
        [
            "_sqlx_migrations",
            "conversations",
            "lanes",
            "run_events",
            "runs",
            "snapshots"
        ]
    );
    assert!(
        tables(&pool, "public").await.is_empty(),
        "nothing of lobu's lands in public"
    );
    // And again, as a restarted replica would: nothing to do, nothing fails.
    replicas[0].migrate().await.expect("migrate again");
    let k = key("acme", "bot", "after-migrate");
    let lease = lease(&replicas[1], &k).await;
    let bytes = Bytes::from_static(b"{\"type\":\"session\"}\n");
    let v = turn(&replicas[2], &lease, None, &bytes).await;
    let head = replicas[3]
        .hydrate(&k)
        .await
        .expect("hydrate")
        .expect("head");
    assert_eq!((head.version, head.transcript), (v, bytes));
}

#[sqlx::test(migrations = false)]
async fn a_configured_schema_holds_every_table_and_its_own_tracking_table(pool: PgPool) {
    let config = || PgStoreConfig::default().schema("agents_eu");
    let eu = PgStore::with_config(pool.clone(), config()).expect("config");
    let eu_replica = PgStore::with_config(replica_pool(&pool, 2).await, config()).expect("config");
    let default = PgStore::new(replica_pool(&pool, 2).await);
    let (a, b, c) = tokio::join!(eu.migrate(), eu_replica.migrate(), default.migrate());
    a.and(b).and(c).expect("all three migrate");

    assert_eq!(applied(&pool, "agents_eu._sqlx_migrations").await, ours());
    let expected = [
        "_sqlx_migrations",
        "conversations",
        "lanes",
        "run_events",
        "runs",
        "snapshots",
    ];
    assert_eq!(tables(&pool, "agents_eu").await, expected);
    assert_eq!(tables(&pool, "lobu").await, expected);

    // The same key in two schemas is two conversations and two queues.
    let k = key("acme", "bot", "same-key");
    let eu_lease = lease(&eu, &k).await;
    let default_lease = lease(&default, &k).await;
    let eu_bytes = Bytes::from_static(b"{\"where\":\"eu\"}\n");
    let v = turn(&eu, &eu_lease, None, &eu_bytes).await;
    assert_eq!(default.hydrate(&k).await.expect("hydrate"), None);
    let head = eu_replica
        .hydrate(&k)
        .await
        .expect("hydrate")
        .expect("head");
    assert_eq!((head.version, &head.transcript), (v, &eu_bytes));
    // The other schema's lease has its own fence sequence: the fences may even be equal, but
    // a write with `default`'s lease lands in `lobu`, never in `agents_eu`.
    let other = write(
        &default_lease,
        &RunId::generate(),
        TerminalStatus::Completed,
        &eu_bytes,
        None,
    );
    let v_default = default.persist(&k, other).await.expect("persist in lobu");
    let head = eu.hydrate(&k).await.expect("hydrate").expect("head");
    assert_eq!(
        head.version, v,
        "agents_eu still has its own head, not {v_default}"
    );
    eu.submit(NewRun::turn(k.clone(), json!({"n": 1})))
        .await
        .expect("submit");
    assert_eq!(eu_replica.depth().await.expect("depth"), 1);
    assert_eq!(default.depth().await.expect("depth"), 0);
}

#[sqlx::test(migrations = false)]
async fn a_host_applications_own_migrations_never_clash_with_ours(pool: PgPool) {
    let host = host_migrator("CREATE TABLE users (id bigint PRIMARY KEY)");
    host.run(&pool).await.expect("host migrates first");
    let store = PgStore::new(pool.clone());
    store
        .migrate()
        .await
        .expect("lobu migrates beside the host");
    // Both migrators see only their own history: neither reports the other's versions as
    // applied-but-missing, both re-run cleanly.
    host.run(&pool).await.expect("host migrates again");
    store.migrate().await.expect("lobu migrates again");
    assert_eq!(applied(&pool, "public._sqlx_migrations").await, [(1, true)]);
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());
}

#[sqlx::test(migrations = false)]
async fn a_migration_lock_held_too_long_is_busy_and_a_later_migrate_succeeds(pool: PgPool) {
    // A host replica runs a slow migration and holds sqlx's (per-database) migration lock.
    let slow = host_migrator("SELECT pg_sleep(3); CREATE TABLE users (id bigint PRIMARY KEY)");
    let host_pool = replica_pool(&pool, 1).await;
    let host = tokio::spawn(async move { slow.run(&host_pool).await });
    // Wait until the host holds the lock (its session shows the advisory lock).
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()";
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(held)
            .fetch_one(&pool)
            .await
            .expect("pg_locks");
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let impatient = PgStore::with_config(
        pool.clone(),
        PgStoreConfig::default().migrate_lock_timeout(Duration::from_millis(200)),
    )
    .expect("config");
    assert_kind(
        impatient.migrate().await,
        ErrorKind::Busy,
        "migrate while another migration holds the lock",
    );
    assert!(
        tables(&pool, "lobu").await.is_empty(),
        "nothing was created"
    );
    host.await.expect("host task").expect("host migration");
    PgStore::new(pool.clone())
        .migrate()
        .await
        .expect("migrate once the lock is free");
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());
}

#[sqlx::test(migrations = false)]
async fn an_invalid_schema_name_is_refused_before_touching_the_database(pool: PgPool) {
    for bad in ["public", "Lobu", "lobu; DROP TABLE x", "", "pg_temp"] {
        let result = PgStore::with_config(pool.clone(), PgStoreConfig::default().schema(bad));
        assert_kind(result.map(|_| ()), ErrorKind::InvalidInput, bad);
    }
}

/// The schema exactly as the previous release left it: every migration before contract v2's.
fn previous_release() -> Migrator {
    release_before(20260601000000, 2)
}

#[sqlx::test(migrations = false)]
async fn data_left_by_the_previous_version_opens_and_its_runs_claim_and_complete(pool: PgPool) {
    previous_release()
        .run(&pool)
        .await
        .expect("the previous schema");
    let store = PgStore::new(pool.clone());
    // What the previous version wrote (its lease and submit statements are the ones this
    // version still uses; its persist is written out in `old_head`): a conversation with a head and a live lease, and a pending
    // run on it; and on another conversation, a run the previous claim statement claimed
    // (token counter 1, no conversation row) whose worker then died.
    let leased = key("acme", "bot", "old-head");
    let held = lease(&store, &leased).await;
    let head_bytes = Bytes::from_static(b"{\"type\":\"session\"}\n{\"n\":1}\n");
    let v1 = old_head(&pool, &leased, &head_bytes).await;
    let pending = submit_before_v7(&pool, &leased, json!({"text": "next"})).await;
    let orphan_key = key("acme", "bot", "old-claim");
    let orphan = submit_before_v7(&pool, &orphan_key, json!({"text": "lost"})).await;
    sqlx::query(
        "UPDATE lobu.runs SET status = 'running', attempts = 1, claimed_by = 'old-worker', \
                claim_token = 1, claim_expires_at = now() - interval '1 second' \
          WHERE id = $1",
    )
    .bind(orphan.as_str())
    .execute(&pool)
    .await
    .expect("the previous version's claim");

    store.migrate().await.expect("upgrade");
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());

    let head = store
        .hydrate(&leased)
        .await
        .expect("hydrate")
        .expect("head");
    assert_eq!((head.version, head.transcript), (v1, head_bytes.clone()));
    // The lapsed old claim is re-delivered under a real fence; the leased conversation waits.
    let worker = lobu_core::WorkerId::generate();
    let redelivered = store
        .claim(&worker, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the old claim, re-delivered");
    assert_eq!((&redelivered.run, redelivered.attempt), (&orphan, 2));
    assert_eq!(redelivered.head, None);
    let orphan_bytes = Bytes::from_static(b"{\"type\":\"session\"}\n");
    let v_orphan = store
        .complete(
            &redelivered,
            lobu_core::Commit::transcript(orphan_bytes, None),
        )
        .await
        .expect("complete")
        .expect("a version");
    assert!(v_orphan > v1);
    assert!(
        store
            .claim(&worker, Duration::from_secs(60))
            .await
            .expect("claim")
            .is_none(),
        "the old lease still owns its conversation"
    );
    // The old lease still renews and releases; then its conversation's run is claimed.
    store
        .renew(&held, Duration::from_secs(60))
        .await
        .expect("renew");
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    let next = store
        .claim(&worker, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the pending run");
    assert_eq!((&next.run, next.head), (&pending, Some(v1)));
    let extended = Bytes::from_static(b"{\"type\":\"session\"}\n{\"n\":1}\n{\"n\":2}\n");
    let v2 = store
        .complete(
            &next,
            lobu_core::Commit::transcript(extended.clone(), Some(v1)),
        )
        .await
        .expect("complete")
        .expect("a version");
    let head = store
        .hydrate(&leased)
        .await
        .expect("hydrate")
        .expect("head");
    assert_eq!((head.version, head.transcript), (v2, extended));
    let record = store
        .status(&leased.org, &pending)
        .await
        .expect("status")
        .expect("run");
    assert_eq!(record.status, lobu_core::RunStatus::Completed);
}

/// A head as versions 1 to 3 wrote it (write_base.sql without the hash state) on a
/// conversation whose row a lease created: a whole copy with its SHA-256.
async fn old_head(pool: &PgPool, key: &ConversationKey, bytes: &[u8]) -> Version {
    let digest = lobu_core::transcript::hash::digest(bytes).to_vec();
    let seq: i64 = sqlx::query_scalar(
        "WITH ins AS ( \
             INSERT INTO lobu.snapshots (org, agent, conversation, seq, run, status, base_seq, \
                                         start_offset, bytes, byte_size, digest) \
             SELECT $1, $2, $3, v.seq, 'old-run', 'completed', v.seq, 0, $4, $5, $6 \
               FROM (SELECT nextval('lobu.versions') AS seq) v RETURNING seq) \
         UPDATE lobu.conversations c \
            SET head_seq = ins.seq, head_run = 'old-run', head_bytes = $5, head_digest = $6, \
                base_seq = ins.seq, base_bytes = $5, chain_deltas = 0, chain_bytes = 0, \
                turns = c.turns + 1, updated_at = now() \
           FROM ins \
          WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3 \
         RETURNING ins.seq",
    )
    .bind(key.org.as_str())
    .bind(key.agent.as_str())
    .bind(key.conversation.as_str())
    .bind(bytes)
    .bind(bytes.len() as i64)
    .bind(digest)
    .fetch_one(pool)
    .await
    .expect("a head as versions 1 to 3 wrote it");
    Version(seq as u64)
}

#[sqlx::test(migrations = false)]
async fn a_head_written_before_hash_states_takes_appends_and_then_keeps_its_state(pool: PgPool) {
    release_before(20261130000000, 3)
        .run(&pool)
        .await
        .expect("schema version 3");
    let store = PgStore::new(pool.clone());
    let conversation = key("acme", "bot", "v3-head");
    let held = lease(&store, &conversation).await;
    let first = Bytes::from_static(b"{\"type\":\"session\"}\n{\"n\":1}\n");
    let v1 = old_head(&pool, &conversation, &first).await;
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    store.migrate().await.expect("upgrade");
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());
    let worker = lobu_core::WorkerId::generate();
    let mut head = (v1, first.to_vec());
    for n in 2..5 {
        store
            .submit(NewRun::turn(conversation.clone(), json!({"text": n})))
            .await
            .expect("submit");
        let claim = store
            .claim(&worker, Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("the run");
        assert_eq!(claim.head, Some(head.0));
        let new = Bytes::from(format!("{{\"n\":{n}}}\n"));
        let commit = lobu_core::Commit::append(new.clone(), Some(head.0), head.1.len());
        let version = store
            .complete(&claim, commit)
            .await
            .expect("append")
            .expect("a version");
        head = (version, [&head.1[..], &new[..]].concat());
        let hydrated = store
            .hydrate(&conversation)
            .await
            .expect("hydrate")
            .expect("head");
        assert_eq!(
            (hydrated.version, &hydrated.transcript[..]),
            (head.0, &head.1[..])
        );
        let state: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT head_state FROM lobu.conversations WHERE conversation = 'v3-head'",
        )
        .fetch_one(&pool)
        .await
        .expect("head_state");
        let mut hash = lobu_core::transcript::hash::TranscriptHash::resume(
            &state.expect("every head written now carries its state"),
        )
        .expect("a state");
        hash.update(b"");
        assert_eq!(hash.digest(), lobu_core::transcript::hash::digest(&head.1));
    }
}

#[sqlx::test(migrations = false)]
async fn runs_stored_before_run_events_existed_upgrade_and_then_record_and_read_events(
    pool: PgPool,
) {
    release_before(20261201000000, 4)
        .run(&pool)
        .await
        .expect("schema version 4");
    let store = PgStore::new(pool.clone());
    let worker = lobu_core::WorkerId::generate();
    let lease = Duration::from_secs(60);
    // Three runs as version 4 left them: one claimed, one completed, one pending.
    let mut runs = Vec::new();
    for conversation in ["v4-claimed", "v4-done", "v4-pending"] {
        let k = key("acme", "bot", conversation);
        runs.push(submit_before_v7(&pool, &k, json!({"text": conversation})).await);
    }
    let claimed = claim_before_v8(&pool, &worker, lease).await;
    let claimed = claimed.expect("the first run");
    let done = claim_before_v8(&pool, &worker, lease).await;
    let done = done.expect("the second run");
    // Completed as version 4's complete did (this release's statements read version 6's
    // `cancel_requested`, and a store migrates before it serves).
    sqlx::query(
        "UPDATE lobu.runs SET status = 'completed', claim_expires_at = NULL, \
                finished_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(done.run.as_str())
    .execute(&pool)
    .await
    .expect("complete as version 4 did");

    store.migrate().await.expect("upgrade");
    assert_eq!(applied(&pool, "lobu._sqlx_migrations").await, ours());

    let org = claimed.key.org.clone();
    let page = |run: usize| {
        let (store, org, run) = (store.clone(), org.clone(), runs[run].clone());
        async move {
            let read = store.read_events(&org, &run, 0, 100).await;
            read.expect("read events").expect("the run")
        }
    };
    let finished = page(1).await;
    assert_eq!((finished.events.len(), finished.last_seq), (0, 0));
    assert!(
        finished.ends_the_run(0),
        "a finished run without events is whole"
    );
    let events = [r#"{"type":"output","text":"upgraded"}"#.to_owned()];
    assert_eq!(
        store
            .record_events(&claimed, &events)
            .await
            .expect("record"),
        1
    );
    let pending = store.claim(&worker, lease).await.expect("claim");
    let pending = pending.expect("the pending run");
    assert_eq!(pending.run, runs[2]);
    assert_eq!(
        store
            .record_events(&pending, &events)
            .await
            .expect("record"),
        1
    );
    for (run, claim) in [(0, &claimed), (2, &pending)] {
        let read = page(run).await;
        assert_eq!(read.events.len(), 1);
        assert_eq!((read.events[0].seq, read.events[0].attempt), (1, 1));
        assert_eq!(read.events[0].data, events[0]);
        let done = store.complete(claim, lobu_core::Commit::default()).await;
        done.expect("complete");
        assert!(page(run).await.ends_the_run(0));
    }
    let late = store.record_events(&done, &events).await;
    assert_kind(late, ErrorKind::Fenced, "a run finished before the upgrade");
}
