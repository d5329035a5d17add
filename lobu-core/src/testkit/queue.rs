//! Clauses of `RunQueue` intake and ordering: submit, status, FIFO per conversation, one
//! claim per conversation, idempotency keys, bad input, depth and wake-ups.

use std::time::{Duration, Instant};

use serde_json::json;

use super::support::{
    LONG, assert_kind, assert_nothing_claimable, claim_all_own, claim_mine, follower, fresh_key,
    give_back, new_turn, record, sibling, submit, unique,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::{IdempotencyKey, RunId, WorkerId};
use crate::queue::{
    Claim, Commit, MAX_ATTEMPTS, MAX_PAYLOAD_BYTES, MAX_RETRY_DELAY, NewRun, RunKind, RunStatus,
};

/// A submitted run is `pending` with no attempts, its payload exactly as submitted
/// (unknown and nested fields included), its kind and attempt limit; another org and an
/// unknown run id find nothing.
pub async fn a_submitted_run_is_pending_with_its_payload(backend: &Backend) {
    let key = fresh_key();
    let payload = json!({
        "message": "héllo 👋 \u{2028}",
        "attachments": [{"name": "a.png", "bytes": 1024}],
        "unknown": {"nested": [1, "two", null, {"three": false}]},
    });
    let mut run = NewRun::turn(key.clone(), payload.clone());
    run.max_attempts = 4;
    let id = submit(backend, run).await;
    let record = record(backend, &key, &id).await;
    assert_eq!(record.run, id);
    assert_eq!(record.key, key);
    assert_eq!(
        (record.kind, record.status),
        (RunKind::Turn, RunStatus::Pending)
    );
    assert_eq!((record.attempts, record.max_attempts), (0, 4));
    assert_eq!(record.payload, payload, "payload round-trips");
    assert_eq!((record.error, record.output), (None, None));
    assert!(record.created_at <= record.updated_at);

    let other = fresh_key();
    let elsewhere = backend.queue.status(&other.org, &id).await.expect("status");
    assert!(elsewhere.is_none(), "another org found the run");
    let unknown = backend.queue.status(&key.org, &RunId::generate()).await;
    assert!(unknown.expect("status").is_none(), "an unknown run id");
    let reset = submit(backend, NewRun::reset(key.clone())).await;
    assert_eq!(record_kind(backend, &key, &reset).await, RunKind::Reset);
}

async fn record_kind(backend: &Backend, key: &crate::ConversationKey, run: &RunId) -> RunKind {
    record(backend, key, run).await.kind
}

/// Runs of one conversation (turns and a reset) are claimed in submission order, one at a
/// time: while one is claimed nothing else of the conversation is claimable; each claim
/// carries the run's payload and kind, and `complete` records the output.
pub async fn runs_of_one_conversation_are_claimed_first_in_first_out(backend: &Backend) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    let mut runs = Vec::new();
    for n in 0..4u64 {
        let run = if n == 2 {
            NewRun::reset(key.clone())
        } else {
            new_turn(&key, n, 3)
        };
        runs.push((submit(backend, run).await, n));
    }
    for (run, n) in &runs {
        let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
        assert_eq!(&claim.run, run, "run {n} is next");
        assert_eq!((claim.attempt, claim.max_attempts), (1, 3));
        assert_eq!(claim.worker, worker);
        if *n == 2 {
            assert_eq!(claim.kind, RunKind::Reset);
        } else {
            assert_eq!(
                (claim.kind, &claim.payload["n"]),
                (RunKind::Turn, &json!(n))
            );
        }
        assert_nothing_claimable(backend, &worker, &[&key], "while a run is claimed").await;
        backend
            .queue
            .complete(&claim, Commit::output(Some(json!({"done": n}))))
            .await
            .expect("complete");
        let done = record(backend, &key, run).await;
        assert_eq!(done.status, RunStatus::Completed);
        assert_eq!(done.output, Some(json!({"done": n})));
    }
    assert_nothing_claimable(backend, &worker, &[&key], "after the last run").await;
}

/// A conversation never has two claimed runs, even under concurrent claims, while other
/// conversations' runs are claimed alongside it.
pub async fn one_conversation_never_has_two_claimed_runs_while_others_proceed(backend: &Backend) {
    let a = fresh_key();
    let (b, c) = (sibling(&a, "b"), sibling(&a, "c"));
    let mut a_runs = Vec::new();
    for n in 0..3 {
        a_runs.push(submit(backend, new_turn(&a, n, 3)).await);
    }
    submit(backend, new_turn(&b, 0, 3)).await;
    submit(backend, new_turn(&c, 0, 3)).await;
    let worker = WorkerId::generate();
    let mine = [&a, &b, &c];
    let claims = claim_all_own(backend.queue.as_ref(), &worker, LONG, &mine, 10).await;
    let mut keys: Vec<_> = claims
        .iter()
        .map(|claim| claim.key.conversation.as_str())
        .collect();
    keys.sort_unstable();
    let mut expected = vec![a.conversation.as_str(), "b", "c"];
    expected.sort_unstable();
    assert_eq!(keys, expected, "one run per conversation is claimable");
    let a_claim = claims
        .iter()
        .find(|claim| claim.key == a)
        .expect("a claim of a");
    assert_eq!(a_claim.run, a_runs[0], "a's oldest run first");

    let racers = concurrent_claims(backend, 8).await;
    let (ours, theirs): (Vec<Claim>, Vec<Claim>) = racers
        .into_iter()
        .partition(|claim| mine.contains(&&claim.key));
    give_back(backend.queue.as_ref(), theirs).await;
    assert!(
        ours.is_empty(),
        "claimed while every conversation was busy: {ours:?}"
    );
    backend
        .queue
        .complete(a_claim, Commit::default())
        .await
        .expect("complete");
    let next = claim_mine(backend, &worker, LONG, &[&a]).await;
    assert_eq!(
        next.run, a_runs[1],
        "a's second run after its first completed"
    );

    let d = sibling(&a, "d");
    let mut d_runs = Vec::new();
    for n in 0..3 {
        d_runs.push(submit(backend, new_turn(&d, n, 3)).await);
    }
    let racers = concurrent_claims(backend, 8).await;
    let (ours, theirs): (Vec<Claim>, Vec<Claim>) =
        racers.into_iter().partition(|claim| claim.key == d);
    give_back(backend.queue.as_ref(), theirs).await;
    let runs: Vec<&RunId> = ours.iter().map(|claim| &claim.run).collect();
    assert_eq!(
        runs,
        [&d_runs[0]],
        "8 racing claims take exactly d's first run"
    );
}

/// `n` claims at once, from `n` workers; the runs they got.
async fn concurrent_claims(backend: &Backend, n: usize) -> Vec<Claim> {
    let tasks = (0..n).map(|_| {
        let queue = backend.queue.clone();
        tokio::spawn(async move { queue.claim(&WorkerId::generate(), LONG).await })
    });
    let results = futures::future::join_all(tasks).await;
    let claims = results
        .into_iter()
        .map(|r| r.expect("claim task").expect("claim"));
    claims.flatten().collect()
}

/// A submit with an idempotency key the conversation already used returns the first run
/// (`created: false`), before and after it finished, and stores nothing; the same key in
/// another conversation is a new run; racing submits with one key make one run.
pub async fn submitting_with_a_used_idempotency_key_returns_the_first_run(backend: &Backend) {
    let key = fresh_key();
    let idempotency = IdempotencyKey::new(unique("idem")).expect("idempotency key");
    let with_key = |n: u64| {
        let mut run = new_turn(&key, n, 3);
        run.idempotency_key = Some(idempotency.clone());
        run
    };
    let first = backend.queue.submit(with_key(1)).await.expect("submit");
    assert!(first.created);
    let again = backend
        .queue
        .submit(with_key(2))
        .await
        .expect("submit again");
    assert_eq!(
        (&again.run, again.created),
        (&first.run, false),
        "a retried submit"
    );
    assert_eq!(
        record(backend, &key, &first.run).await.payload["n"],
        json!(1)
    );
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, first.run);
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let late = backend
        .queue
        .submit(with_key(3))
        .await
        .expect("submit after completion");
    assert_eq!(
        (&late.run, late.created),
        (&first.run, false),
        "after completion"
    );
    assert_nothing_claimable(backend, &worker, &[&key], "a retried submit stored a run").await;

    let elsewhere = sibling(&key, "elsewhere");
    let mut run = new_turn(&elsewhere, 1, 3);
    run.idempotency_key = Some(idempotency.clone());
    let other = backend.queue.submit(run).await.expect("submit elsewhere");
    assert!(
        other.created && other.run != first.run,
        "keys are per conversation"
    );

    let racing = IdempotencyKey::new(unique("race")).expect("idempotency key");
    let tasks = (0..8).map(|n| {
        let queue = backend.queue.clone();
        let mut run = new_turn(&key, n, 3);
        run.idempotency_key = Some(racing.clone());
        tokio::spawn(async move { queue.submit(run).await })
    });
    let results = futures::future::join_all(tasks).await;
    let submitted: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("task").expect("submit"))
        .collect();
    let created = submitted.iter().filter(|s| s.created).count();
    assert_eq!(
        created, 1,
        "racing submits with one key created {created} runs"
    );
    assert!(
        submitted.iter().all(|s| s.run == submitted[0].run),
        "one run for one key"
    );
}

/// Bad attempts, retry delays and payloads (0 or too many attempts, a delay over 24 h, a
/// payload that is not a JSON object, a payload over the limit) are typed errors and store
/// nothing, not even their idempotency key.
pub async fn bad_submissions_are_typed_errors_and_store_nothing(backend: &Backend) {
    let key = fresh_key();
    let idempotency = IdempotencyKey::new(unique("idem")).expect("idempotency key");
    let base = || {
        let mut run = new_turn(&key, 0, 3);
        run.idempotency_key = Some(idempotency.clone());
        run
    };
    let big = "x".repeat(MAX_PAYLOAD_BYTES);
    let mut cases: Vec<(NewRun, ErrorKind, &str)> = vec![
        (
            NewRun {
                max_attempts: 0,
                ..base()
            },
            ErrorKind::InvalidInput,
            "zero attempts",
        ),
        (
            NewRun {
                max_attempts: MAX_ATTEMPTS + 1,
                ..base()
            },
            ErrorKind::InvalidInput,
            "too many attempts",
        ),
        (
            NewRun {
                retry_delay: MAX_RETRY_DELAY + Duration::from_secs(1),
                ..base()
            },
            ErrorKind::InvalidInput,
            "a retry delay over 24h",
        ),
        (
            NewRun {
                payload: json!({"message": big}),
                ..base()
            },
            ErrorKind::TooLarge,
            "a payload over the limit",
        ),
    ];
    for payload in [json!(["a"]), json!("text"), json!(null), json!(42)] {
        cases.push((
            NewRun { payload, ..base() },
            ErrorKind::InvalidInput,
            "a payload that is not an object",
        ));
    }
    let worker = WorkerId::generate();
    for (run, expected, what) in cases {
        assert_kind(backend.queue.submit(run).await, expected, what);
    }
    assert_nothing_claimable(backend, &worker, &[&key], "after refused submits").await;
    let good = backend.queue.submit(base()).await.expect("a good submit");
    assert!(
        good.created,
        "the refused submits did not store the idempotency key"
    );
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, good.run);
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
}

/// `depth` counts pending runs: a conversation's runs waiting behind its first are counted.
pub async fn queue_depth_counts_waiting_runs(backend: &Backend) {
    let key = fresh_key();
    for n in 0..3 {
        submit(backend, new_turn(&key, n, 3)).await;
    }
    // Another clause may hold the first run for a moment; the two behind it always wait.
    let depth = backend.queue.depth().await.expect("depth");
    assert!(
        depth >= 2,
        "depth {depth} with two runs waiting behind a first"
    );
}

/// `wait_for_work` returns by its deadline, with and without work queued.
pub async fn wait_for_work_returns_by_its_deadline(backend: &Backend) {
    let max = Duration::from_millis(50);
    let within = Duration::from_secs(60);
    let idle = tokio::time::timeout(within, backend.queue.wait_for_work(max)).await;
    assert!(idle.is_ok(), "wait_for_work({max:?}) did not return");
    let key = fresh_key();
    submit(backend, new_turn(&key, 0, 3)).await;
    let busy = tokio::time::timeout(within, backend.queue.wait_for_work(max)).await;
    assert!(
        busy.is_ok(),
        "wait_for_work({max:?}) with work queued did not return"
    );
}

/// `wait_for_run` ends early when the run ends, and at once for a change after `since` that
/// came before the wait; for a run that does not change it waits its time out (after the
/// first wait, which may start a listener). A store without signals may sleep the whole
/// wait: this clause is for stores that have them.
pub async fn a_follower_waiting_for_a_run_is_woken_when_it_ends(backend: &Backend) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    submit(backend, new_turn(&key, 0, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;

    // The first wait may start a listener, whose connecting wakes everyone once (a hint);
    // connecting may take a while (TLS, a loaded machine). Wait until ten waits in a row
    // (half a second) passed whole: the listener is up, and from then on only a change may
    // end a wait early.
    let (org, run) = (&key.org, &claim.run);
    let mut quiet_in_a_row = 0;
    for _ in 0..200 {
        let started = Instant::now();
        backend
            .queue
            .wait_for_run(org, run, started, Duration::from_millis(50))
            .await;
        let whole = started.elapsed() >= Duration::from_millis(50);
        quiet_in_a_row = if whole { quiet_in_a_row + 1 } else { 0 };
        if quiet_in_a_row == 10 {
            break;
        }
    }
    assert_eq!(
        quiet_in_a_row, 10,
        "waits on a run that did not change kept ending early"
    );
    let quiet = Instant::now();
    backend
        .queue
        .wait_for_run(org, run, quiet, Duration::from_millis(50))
        .await;
    assert!(
        quiet.elapsed() >= Duration::from_millis(50),
        "a run that did not change ended the wait early"
    );

    let since = Instant::now();
    let waiter = follower(backend, &key.org, &claim.run, since).await;
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
    assert!(
        woken.is_ok(),
        "a follower was not woken within 30 s of its run completing"
    );

    // The completion came after `since`: a wait that starts only now returns at once.
    let late = tokio::time::timeout(
        Duration::from_secs(30),
        backend
            .queue
            .wait_for_run(&key.org, &claim.run, since, Duration::from_secs(600)),
    )
    .await;
    assert!(late.is_ok(), "a change before the wait was lost");
}
