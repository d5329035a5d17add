//! A commit taking steered runs, stopped by a crash at each of its steps: once something
//! looks at the run again (the next claim, a retry of the commit, a cancel of a taken run),
//! either all of it happened (the transcript is the head, the steered runs completed with the
//! turn's output and never run on their own) or none of it (no head, the steered runs wait
//! and are offered again).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::control::CancelOutcome;
use lobu_core::multitask::steered_output;
use lobu_core::{
    Claim, Commit, ConversationKey, ErrorKind, MultitaskStrategy, NewRun, RunId, RunQueue,
    RunStatus, SessionStore, Version, WorkerId,
};
use serde_json::json;

use crate::store::{FileStore, Step};

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(800);
const TURN: &[u8] = b"{\"type\":\"message\"}\n";

/// Every step a commit with a transcript reaches, and whether it is past the commit point.
const STEPS: [(Step, bool); 5] = [
    (Step::TranscriptWritten, false),
    (Step::HistoryWritten, false),
    (Step::Committed, true),
    (Step::SteeredPending, true),
    // The first steered run's record is written, its marker not yet removed.
    (Step::QueueHalfway, true),
];

async fn open(dir: &Path) -> FileStore {
    FileStore::open(dir).await.unwrap()
}

fn key() -> ConversationKey {
    ConversationKey::parse("acme", "bot", "c1").unwrap()
}

fn simulated<T: std::fmt::Debug>(result: lobu_core::Result<T>) {
    let error = result.expect_err("the simulated crash");
    assert!(error.message().starts_with("simulated crash"), "{error}");
}

/// A claimed turn (claim lapsing after [`SHORT`]) offered two steered runs, with an ordinary
/// turn queued behind them.
struct Offered {
    store: FileStore,
    claim: Claim,
    steered: Vec<RunId>,
    ordinary: RunId,
}

impl Offered {
    async fn new(dir: &Path) -> Self {
        let store = open(dir).await;
        store.submit(NewRun::turn(key(), json!({}))).await.unwrap();
        let claim = store.claim(&WorkerId::generate(), SHORT).await.unwrap();
        let claim = claim.expect("the turn");
        let mut steered = Vec::new();
        for n in 0..2 {
            let run = NewRun::turn(key(), json!({"n": n})).multitask(MultitaskStrategy::Steer);
            steered.push(store.submit(run).await.unwrap().run);
        }
        let ordinary = store.submit(NewRun::turn(key(), json!({})));
        let ordinary = ordinary.await.unwrap().run;
        let offered = store.steerable(&claim).await.unwrap();
        let runs: Vec<RunId> = offered.into_iter().map(|s| s.run).collect();
        assert_eq!(runs, steered);
        Offered {
            store,
            claim,
            steered,
            ordinary,
        }
    }

    fn commit(&self, transcript: bool) -> Commit {
        let mut commit = match transcript {
            true => Commit::transcript(Bytes::from_static(TURN), None),
            false => Commit::output(Some(json!({"ok": true}))),
        };
        commit.steered = self.steered.clone();
        commit
    }

    /// Commit through a store that stops at `step`.
    async fn crash(&self, dir: &Path, step: Step, transcript: bool) {
        let crashing = open(dir).await.crashing_at(step);
        simulated(
            crashing
                .complete(&self.claim, self.commit(transcript))
                .await,
        );
    }

    async fn status(&self, run: &RunId) -> lobu_core::RunRecord {
        let record = self.store.status(&key().org, run).await.unwrap();
        record.expect("the run")
    }

    async fn assert_whole(&self, transcript: bool, step: Step) {
        let head = self.store.hydrate(&key()).await.unwrap();
        if transcript {
            let head = head.expect("the head");
            assert_eq!((&head.transcript[..], &head.run), (TURN, &self.claim.run));
        }
        assert_eq!(
            self.status(&self.claim.run).await.status,
            RunStatus::Completed
        );
        for run in &self.steered {
            let done = self.status(run).await;
            assert_eq!(
                (done.status, done.attempts),
                (RunStatus::Completed, 0),
                "{step:?}"
            );
            assert_eq!(
                done.output,
                Some(steered_output(&self.claim.run)),
                "{step:?}"
            );
        }
    }

    async fn assert_absent(&self, step: Step) {
        assert!(
            self.store.hydrate(&key()).await.unwrap().is_none(),
            "{step:?}"
        );
        for run in &self.steered {
            let waiting = self.status(run).await;
            assert_eq!((waiting.status, waiting.attempts), (RunStatus::Pending, 0));
        }
    }
}

#[tokio::test]
async fn a_steering_commit_stopped_at_any_step_is_whole_or_absent_after_the_next_claim() {
    let cases = STEPS
        .iter()
        .map(|&(step, landed)| (step, landed, true))
        .chain([(Step::SteeredPending, true, false)]);
    for (step, landed, transcript) in cases {
        let dir = tempfile::tempdir().unwrap();
        let offered = Offered::new(dir.path()).await;
        offered.crash(dir.path(), step, transcript).await;
        tokio::time::sleep(PAST_SHORT).await;
        let worker = WorkerId::generate();
        let next = offered.store.claim(&worker, LONG).await.unwrap();
        let next = next.expect("a run");
        if landed {
            offered.assert_whole(transcript, step).await;
            assert_eq!(
                next.run, offered.ordinary,
                "{step:?}: the taken runs never run"
            );
        } else {
            offered.assert_absent(step).await;
            assert_eq!(
                (&next.run, next.attempt),
                (&offered.claim.run, 2),
                "{step:?}"
            );
            let again = offered.store.steerable(&next).await.unwrap();
            assert_eq!(again.len(), 2, "{step:?}: offered again");
        }
    }
}

#[tokio::test]
async fn a_steering_commit_retried_after_a_crash_at_any_step_lands_once_whole() {
    for (step, _) in STEPS {
        let dir = tempfile::tempdir().unwrap();
        let offered = Offered::new(dir.path()).await;
        offered.crash(dir.path(), step, true).await;
        let store = &offered.store;
        let version = store.complete(&offered.claim, offered.commit(true)).await;
        assert_eq!(version.unwrap(), Some(Version(1)), "{step:?}");
        offered.assert_whole(true, step).await;
        let next = store.claim(&WorkerId::generate(), LONG).await.unwrap();
        assert_eq!(next.expect("a run").run, offered.ordinary, "{step:?}");
    }
}

#[tokio::test]
async fn cancelling_a_taken_run_after_a_crash_finds_it_completed_only_if_the_commit_landed() {
    for (step, landed) in STEPS {
        let dir = tempfile::tempdir().unwrap();
        let offered = Offered::new(dir.path()).await;
        offered.crash(dir.path(), step, true).await;
        let last = offered.steered.last().unwrap();
        let outcome = offered.store.cancel(&key().org, last, "never mind").await;
        let outcome = outcome.unwrap().expect("the run");
        if landed {
            let finished = CancelOutcome::Finished(RunStatus::Completed);
            assert_eq!(outcome, finished, "{step:?}");
            offered.assert_whole(true, step).await;
        } else {
            assert_eq!(outcome, CancelOutcome::Cancelled, "{step:?}");
            // The turn can no longer take it: its retried commit is refused whole.
            let retried = offered.store.complete(&offered.claim, offered.commit(true));
            let err = retried.await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{step:?}");
            assert!(offered.store.hydrate(&key()).await.unwrap().is_none());
        }
    }
}

#[tokio::test]
async fn recovery_never_completes_runs_a_refused_commit_meant_to_take() {
    let dir = tempfile::tempdir().unwrap();
    let offered = Offered::new(dir.path()).await;
    // Refused after its note was written: the expected head does not exist.
    let mut refused = offered.commit(true);
    refused.expected = Some(Version(7));
    let err = offered.store.complete(&offered.claim, refused).await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Conflict);
    // The same turn commits taking nothing, and a crash stops it past its commit point.
    let crashing = open(dir.path()).await.crashing_at(Step::Committed);
    let plain = Commit::transcript(Bytes::from_static(TURN), None);
    simulated(crashing.complete(&offered.claim, plain).await);
    tokio::time::sleep(PAST_SHORT).await;
    let next = offered.store.claim(&WorkerId::generate(), LONG).await;
    let next = next.unwrap().expect("a run");
    assert_eq!(
        next.run, offered.steered[0],
        "the steered run runs on its own"
    );
    assert_eq!(
        offered.status(&offered.claim.run).await.status,
        RunStatus::Completed
    );
    assert_eq!(
        offered.status(&offered.steered[1]).await.status,
        RunStatus::Pending
    );
}

#[tokio::test]
async fn a_commit_taking_nothing_writes_no_note_and_a_steer_run_says_so_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let offered = Offered::new(dir.path()).await;
    let plain = Commit::transcript(Bytes::from_static(TURN), None);
    offered.store.complete(&offered.claim, plain).await.unwrap();
    let record = |run: &RunId| {
        let path = crate::layout::nested(&dir.path().join("queue/runs"), run.as_str());
        std::fs::read_to_string(path).unwrap()
    };
    let turn = record(&offered.claim.run);
    assert!(!turn.contains("steer"), "no steering fields: {turn}");
    let steered = record(&offered.steered[0]);
    assert!(steered.contains("\"steer\":true"), "{steered}");
}
