//! Retention with a policy on PostgreSQL beyond the conformance clauses: dry runs that change
//! no row, bounded calls over more rows than one batch, events cut inside a run, and agents
//! whose rows a prune of another agent leaves alone.

mod support;

#[path = "support/dump.rs"]
mod dump;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dump::PgRows;
use lobu_core::events::StoredEvent;
use lobu_core::retention::{Agents, EventPrune, IdlePrune, RunPrune};
use lobu_core::testkit::hostile::{StoreDump, assert_unchanged};
use lobu_core::{AgentId, NewRun, OrgId, PruneReport, RunId, RunQueue, SessionStore, WorkerId};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, key, lease, turn};

/// An hour ago: everything the tests write "two hours ago" is older.
fn cutoff() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

async fn run_sql(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM lobu.{table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("count")
}

/// `n` conversations of `agent` idle for two hours, each with its head and one failed copy
/// (rows written directly: through persist it would take minutes on a loaded box).
async fn idle_conversations(pool: &PgPool, agent: &str, n: i64) {
    sqlx::query(
        "INSERT INTO lobu.conversations (org, agent, conversation, fence, lease_expires_at, \
                                         head_seq, head_run, head_bytes, head_digest, base_seq, \
                                         base_bytes, turns, updated_at) \
         SELECT 'acme', $1, 'idle-' || i, nextval('lobu.fences'), now() - interval '2 hours', \
                10 * i, 'run-' || i, 3, '\\x00'::bytea, 10 * i, 3, 1, \
                now() - interval '2 hours' \
           FROM generate_series(1, $2) i",
    )
    .bind(agent)
    .bind(n)
    .execute(pool)
    .await
    .expect("idle conversations");
    sqlx::query(
        "INSERT INTO lobu.snapshots (org, agent, conversation, seq, run, status, base_seq, \
                                     start_offset, bytes, byte_size, digest, created_at) \
         SELECT c.org, c.agent, c.conversation, c.head_seq + f, c.head_run, \
                CASE f WHEN 0 THEN 'completed' ELSE 'failed' END, c.head_seq + f, 0, \
                'abc'::bytea, 3, '\\x00'::bytea, now() - interval '2 hours' \
           FROM lobu.conversations c, generate_series(0, 1) f \
          WHERE c.agent = $1",
    )
    .bind(agent)
    .execute(pool)
    .await
    .expect("their snapshots");
}

/// Runs `id-1..=id-n` of `status` that finished two hours ago, with `events` events each.
async fn finished_runs(pool: &PgPool, id: &str, status: &str, n: i64, events: i64) {
    sqlx::query(
        "INSERT INTO lobu.runs (id, org, agent, conversation, kind, status, payload, \
                                max_attempts, retry_delay_us, attempts, idempotency_key, \
                                finished_at, updated_at) \
         SELECT $1 || '-' || i, 'acme', 'bot', $1 || '-' || i, 'turn', $2, '{}', 3, 0, 1, \
                'key-' || i, now() - interval '2 hours' + i * interval '1 millisecond', \
                now() - interval '2 hours' + i * interval '1 millisecond' \
           FROM generate_series(1, $3) i",
    )
    .bind(id)
    .bind(status)
    .bind(n)
    .execute(pool)
    .await
    .expect("finished runs");
    sqlx::query(
        "INSERT INTO lobu.run_events (run_id, seq, attempt, data) \
         SELECT $1 || '-' || i, s, 1, '{\"seq\":' || s || '}' \
           FROM generate_series(1, $2) i, generate_series(1, $3) s",
    )
    .bind(id)
    .bind(n)
    .bind(events)
    .execute(pool)
    .await
    .expect("their events");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_dry_run_of_each_prune_changes_no_row_and_counts_what_the_prune_then_removes(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    idle_conversations(&pool, "bot", 5).await;
    idle_conversations(&pool, "helper", 1).await;
    // A conversation in use, with three old failed copies; a spent lease with nothing stored.
    let fresh = key("acme", "bot", "fresh");
    let held = lease(&store, &fresh).await;
    turn(&store, &held, None, &Bytes::from_static(b"{}\n")).await;
    run_sql(
        &pool,
        "INSERT INTO lobu.snapshots (org, agent, conversation, seq, run, status, base_seq, \
                                     start_offset, bytes, byte_size, digest, created_at) \
         SELECT 'acme', 'bot', 'fresh', 100000 + i, 'failed-' || i, 'failed', 100000 + i, 0, \
                'abc'::bytea, 3, '\\x00'::bytea, now() - interval '2 hours' \
           FROM generate_series(1, 3) i",
    )
    .await;
    run_sql(
        &pool,
        "INSERT INTO lobu.conversations (org, agent, conversation, fence, lease_expires_at) \
         VALUES ('acme', 'bot', 'spent', nextval('lobu.fences'), now() - interval '2 hours')",
    )
    .await;
    finished_runs(&pool, "done", "completed", 2, 3).await;
    finished_runs(&pool, "dead", "failed", 2, 3).await;
    store
        .submit(NewRun::turn(key("acme", "bot", "live"), json!({})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim");
    let claim = claim.expect("a run");
    let events = [r#"{"n":1}"#.to_owned()];
    store.record_events(&claim, &events).await.expect("record");

    let cutoff = cutoff();
    let idle = IdlePrune {
        limit: 5,
        ..IdlePrune::everything_before(cutoff)
    };
    let runs = RunPrune {
        failed_before: SystemTime::UNIX_EPOCH,
        ..RunPrune::everything_before(cutoff)
    };
    let events = EventPrune {
        limit: 5,
        ..EventPrune::everything_before(cutoff)
    };
    let rows = PgRows::new(pool.clone());
    let before = rows.dump().await;
    let dry = |idle: &IdlePrune, runs: RunPrune, events: EventPrune| {
        let idle = IdlePrune {
            dry_run: true,
            ..idle.clone()
        };
        let store = store.clone();
        async move {
            let idle = store.prune_with(&idle).await.expect("dry prune");
            let runs = RunPrune {
                dry_run: true,
                ..runs
            };
            let runs = store.prune_runs_with(&runs).await.expect("dry run prune");
            let events = EventPrune {
                dry_run: true,
                ..events
            };
            let events = store.prune_events_with(&events).await.expect("dry events");
            (idle, runs, events)
        }
    };
    let counted = dry(&idle, runs, events).await;
    assert_unchanged(&before, &rows.dump().await, "dry runs");

    // The 5 oldest of the 6 idle conversations (bot's) with both their snapshots, and the 4
    // old forensic copies of the others (helper's and "fresh"'s; the 5 taken conversations'
    // copies are not counted twice); the 2 completed runs; 5 events.
    let expected = PruneReport {
        conversations: 5,
        snapshots: 5 * 2 + 4,
    };
    assert_eq!(counted, (expected, 2, 5));
    assert_eq!(store.prune_with(&idle).await.expect("prune"), expected);
    assert_eq!(store.prune_events_with(&events).await.expect("events"), 5);
    assert_eq!(store.prune_runs_with(&runs).await.expect("runs"), 2);
    assert!(store.hydrate(&fresh).await.expect("hydrate").is_some());
    assert_eq!(
        count(&pool, "runs").await,
        2 + 1,
        "the failed runs and the live one"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_bounded_prune_of_more_conversations_than_one_batch_stops_at_its_limit_and_the_next_goes_on(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    idle_conversations(&pool, "bot", 1200).await;
    // Conversations only: their forensic copies go with them, none on their own.
    let bounded = IdlePrune {
        limit: 700,
        forensic_before: None,
        ..IdlePrune::everything_before(cutoff())
    };
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(store.prune_with(&bounded).await.expect("prune"));
    }
    let report = |n| PruneReport {
        conversations: n,
        snapshots: 2 * n,
    };
    assert_eq!(reports, [report(700), report(500), report(0)]);
    assert_eq!(count(&pool, "snapshots").await, 0);
    assert_eq!(
        count(&pool, "conversations").await,
        0,
        "the spent leases went too"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_bounded_run_prune_of_more_runs_than_one_batch_takes_their_events_and_keeps_dead_letters(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    finished_runs(&pool, "done", "completed", 1500, 1).await;
    finished_runs(&pool, "dead", "timeout", 1000, 1).await;
    let cutoff = cutoff();
    let dead_letters_kept = RunPrune {
        failed_before: SystemTime::UNIX_EPOCH,
        ..RunPrune::everything_before(cutoff)
    };
    let removed = store.prune_runs_with(&dead_letters_kept).await;
    assert_eq!(removed.expect("prune"), 1500);
    assert_eq!(
        count(&pool, "run_events").await,
        1000,
        "events go with their runs"
    );
    let bounded = RunPrune {
        limit: 600,
        ..RunPrune::everything_before(cutoff)
    };
    let mut removed = Vec::new();
    for _ in 0..3 {
        removed.push(store.prune_runs_with(&bounded).await.expect("prune"));
    }
    assert_eq!(removed, [600, 400, 0]);
    assert_eq!(count(&pool, "run_events").await, 0);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_bounded_event_prune_cuts_a_run_at_its_oldest_events_and_reads_of_the_rest_hold(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    // Runs "run-1" and "run-2" with five events each, "run-1" finished first.
    finished_runs(&pool, "run", "completed", 2, 5).await;
    let org = OrgId::new("acme").expect("org");
    let read = |after: u64| {
        let (store, org) = (store.clone(), org.clone());
        async move {
            let run = RunId::new("run-2").expect("run id");
            let page = store.read_events(&org, &run, after, 100).await;
            let page = page.expect("read").expect("the run stays");
            let seqs: Vec<u64> = page.events.iter().map(|e: &StoredEvent| e.seq).collect();
            (seqs, page.last_seq)
        }
    };
    let bounded = EventPrune {
        limit: 7,
        ..EventPrune::everything_before(cutoff())
    };
    assert_eq!(store.prune_events_with(&bounded).await.expect("prune"), 7);
    assert_eq!(read(0).await, (vec![3, 4, 5], 5), "the oldest two went");
    assert_eq!(read(3).await, (vec![4, 5], 5), "paging by seq still holds");
    assert_eq!(store.prune_events_with(&bounded).await.expect("again"), 3);
    assert_eq!(read(0).await, (vec![], 0));
    assert_eq!(store.prune_events_with(&bounded).await.expect("last"), 0);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_prune_of_one_agent_leaves_other_agents_conversations_and_spent_leases(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    idle_conversations(&pool, "bot", 2).await;
    idle_conversations(&pool, "helper", 2).await;
    run_sql(
        &pool,
        "INSERT INTO lobu.conversations (org, agent, conversation, fence, lease_expires_at) \
         SELECT 'acme', a, 'spent', nextval('lobu.fences'), now() - interval '2 hours' \
           FROM unnest(ARRAY['bot', 'helper']) a",
    )
    .await;
    let bot = AgentId::new("bot").expect("agent");
    let only_bot = IdlePrune {
        agents: Agents::Only(bot.clone()),
        ..IdlePrune::everything_before(cutoff())
    };
    let report = store.prune_with(&only_bot).await.expect("prune");
    assert_eq!((report.conversations, report.snapshots), (2, 4));
    let agents: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT agent FROM lobu.conversations ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("agents");
    assert_eq!(agents, ["helper"], "bot's rows went, its spent lease too");
    let but_helper = IdlePrune {
        agents: Agents::AllExcept(vec![AgentId::new("helper").expect("agent")]),
        ..only_bot
    };
    assert_eq!(
        store.prune_with(&but_helper).await.expect("prune"),
        PruneReport::default()
    );
    assert_eq!(count(&pool, "conversations").await, 3);
}
