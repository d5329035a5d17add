//! Lanes under concurrency: submits, claims, completions, retries, hand-backs and
//! cancellations racing on a few conversations never leave a run unclaimable, keep each
//! conversation first in first out, and leave every lane exact.

#[path = "support/lanes.rs"]
mod lanes;
mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use lanes::assert_lanes_exact;
use lobu_core::control::{Failure, Retry};
use lobu_core::{Claim, Commit, ErrorKind, NewRun, RunId, RunQueue, TerminalStatus, WorkerId};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, key, replica_pool};

const CONVERSATIONS: usize = 4;
const SUBMITTERS: usize = 6;
const PER_SUBMITTER: usize = 30;
const WORKERS: usize = 6;

/// What a worker does with its `n`th claim: mostly complete, sometimes fail with a retry
/// (first attempts only) or hand the run back.
async fn finish(store: &PgStore, claim: &Claim, n: usize) {
    let retry = Failure::new(TerminalStatus::Failed, "flaky").retry(Retry::After(Duration::ZERO));
    let outcome = match n % 7 {
        3 if claim.attempt == 1 => store.fail(claim, &retry).await.map(drop),
        5 if claim.attempt == 1 => store.release(claim).await,
        _ => store.complete(claim, Commit::default()).await.map(drop),
    };
    match outcome {
        Ok(()) => {}
        // Cancelled while claimed: its failure ends it.
        Err(e) if e.kind() == ErrorKind::Cancelled => {
            let never = Failure::new(TerminalStatus::Failed, "cancelled").retry(Retry::Never);
            store
                .fail(claim, &never)
                .await
                .expect("end a cancelled claim");
        }
        Err(e) => panic!("{e}"),
    }
}

async fn unfinished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM lobu.runs WHERE status IN ('pending', 'running')")
        .fetch_one(pool)
        .await
        .expect("count unfinished runs")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn racing_submits_claims_and_ends_never_strand_a_run_and_keep_lanes_exact(pool: PgPool) {
    let store = PgStore::new(replica_pool(&pool, 12).await);
    let keys: Vec<_> = (0..CONVERSATIONS)
        .map(|n| key("acme", "bot", &format!("race-{n}")))
        .collect();
    // Each conversation's first claims, in claim order.
    let firsts: Mutex<HashMap<String, Vec<RunId>>> = Mutex::default();
    let submitted = Mutex::new(0_usize);
    let submitters = (0..SUBMITTERS).map(|s| {
        let (store, keys, submitted) = (&store, &keys, &submitted);
        async move {
            for n in 0..PER_SUBMITTER {
                let k = &keys[(s + n) % CONVERSATIONS];
                let run = store.submit(NewRun::turn(k.clone(), json!({"n": n})));
                let run = run.await.expect("submit").run;
                if n % 9 == 4 {
                    store
                        .cancel(&k.org, &run, "changed my mind")
                        .await
                        .expect("cancel");
                }
                *submitted.lock().expect("count") += 1;
            }
        }
    });
    let workers = (0..WORKERS).map(|_| {
        let (store, pool, firsts, submitted) = (&store, &pool, &firsts, &submitted);
        async move {
            let worker = WorkerId::generate();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            for n in 0.. {
                let Some(claim) = store.claim(&worker, LONG).await.expect("claim") else {
                    let all_in = *submitted.lock().expect("count") == SUBMITTERS * PER_SUBMITTER;
                    if all_in && unfinished(pool).await == 0 {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "a run is stranded");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                if claim.attempt == 1 {
                    let mut firsts = firsts.lock().expect("firsts");
                    let conversation = claim.key.conversation.as_str().to_owned();
                    firsts
                        .entry(conversation)
                        .or_default()
                        .push(claim.run.clone());
                }
                finish(store, &claim, n).await;
            }
        }
    });
    let submitting = futures::future::join_all(submitters);
    let working = futures::future::join_all(workers);
    tokio::join!(submitting, working);

    assert_eq!(unfinished(&pool).await, 0, "every run ended");
    assert_lanes_exact(&pool, "the race").await;
    assert_eq!(store.depth().await.expect("depth"), 0);
    // First claims of each conversation in submit order (released runs go again at once,
    // ahead of everything behind them; a retried one too).
    for (conversation, runs) in firsts.into_inner().expect("firsts") {
        let ids: Vec<&str> = runs.iter().map(RunId::as_str).collect();
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM lobu.runs r JOIN unnest($1::text[]) WITH ORDINALITY AS u (id, n) \
                 ON r.id = u.id ORDER BY u.n",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .expect("seqs");
        assert!(seqs.is_sorted(), "{conversation} out of order: {seqs:?}");
    }
}
