//! Bad input to the run queue gets a typed error and changes nothing: after each refused
//! call, every file under the root is byte for byte what it was. An overlong failure
//! message is not refused (the run did fail) but stored cut, as lobu-store-pg stores it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    Claim, Commit, ConversationLocks, ErrorKind, Failure, Fence, IdempotencyKey, MAX_ATTEMPTS,
    MAX_LEASE, MAX_PAYLOAD_BYTES, MAX_RETRY_DELAY, NewRun, RunId, RunQueue, TerminalStatus,
    WorkerId,
};
use serde_json::json;

use common::{Fixture, tree};

#[tokio::test]
async fn refused_queue_calls_change_no_file() {
    let fx = Fixture::new().await;
    // The fixture's lease owns the conversation; a claim needs it free.
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let queued = fx
        .store
        .submit(NewRun::turn(fx.key.clone(), json!({"n": 1})))
        .await
        .unwrap();
    let claim = fx
        .store
        .claim(&worker, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("a claim");
    assert_eq!(claim.run, queued.run);
    let before = tree(fx.dir.path());

    let idem = IdempotencyKey::new("retry-1").unwrap();
    let base = || NewRun {
        idempotency_key: Some(idem.clone()),
        ..NewRun::turn(fx.key.clone(), json!({"n": 2}))
    };
    let big = json!({"message": "x".repeat(MAX_PAYLOAD_BYTES)});
    let submissions = [
        (
            NewRun {
                max_attempts: 0,
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                max_attempts: MAX_ATTEMPTS + 1,
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                retry_delay: MAX_RETRY_DELAY + Duration::from_secs(1),
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                payload: json!(["not", "an", "object"]),
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                payload: big,
                ..base()
            },
            ErrorKind::TooLarge,
        ),
    ];
    for (run, kind) in submissions {
        let result = fx.store.submit(run).await;
        fx.refused(&before, kind, "a bad submission", result).await;
    }
    for lease in [Duration::ZERO, MAX_LEASE + Duration::from_millis(1)] {
        let result = fx.store.claim(&worker, lease).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "claim with a bad lease",
            result,
        )
        .await;
        let result = fx.store.heartbeat(&claim, lease).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "heartbeat with a bad lease",
            result,
        )
        .await;
    }
    let result = fx
        .store
        .fail(&claim, &Failure::new(TerminalStatus::Completed, "no"))
        .await;
    fx.refused(
        &before,
        ErrorKind::InvalidInput,
        "fail as completed",
        result,
    )
    .await;
    let stale = [
        Claim {
            fence: Fence(claim.fence.0 + 1),
            ..claim.clone()
        },
        Claim {
            worker: WorkerId::generate(),
            ..claim.clone()
        },
    ];
    for stale in &stale {
        let result = fx.store.heartbeat(stale, Duration::from_secs(1)).await;
        fx.refused(
            &before,
            ErrorKind::Fenced,
            "heartbeat a forged claim",
            result,
        )
        .await;
        let result = fx.store.complete(stale, Commit::output(None)).await;
        fx.refused(
            &before,
            ErrorKind::Fenced,
            "complete a forged claim",
            result,
        )
        .await;
        let result = fx
            .store
            .fail(stale, &Failure::new(TerminalStatus::Failed, "x"))
            .await;
        fx.refused(&before, ErrorKind::Fenced, "fail a forged claim", result)
            .await;
        let result = RunQueue::release(&fx.store, stale).await;
        fx.refused(&before, ErrorKind::Fenced, "release a forged claim", result)
            .await;
    }
    let stale_head = Commit::transcript(Bytes::from_static(b"{}\n"), None);
    let result = fx.store.complete(&claim, stale_head).await;
    fx.refused(
        &before,
        ErrorKind::Conflict,
        "complete over a head that moved",
        result,
    )
    .await;
    let oversized = Commit::transcript(Bytes::from(vec![b'x'; 1025]), Some(fx.head));
    let result = fx.store.complete(&claim, oversized).await;
    fx.refused(
        &before,
        ErrorKind::TooLarge,
        "complete with an oversized transcript",
        result,
    )
    .await;
    let unknown = Claim {
        run: RunId::generate(),
        ..claim.clone()
    };
    let result = fx.store.complete(&unknown, Commit::output(None)).await;
    fx.refused(
        &before,
        ErrorKind::NotFound,
        "complete an unknown run",
        result,
    )
    .await;
    fx.store
        .complete(&claim, Commit::output(None))
        .await
        .expect("the real claim still works");
}

#[tokio::test]
async fn a_failure_message_over_16_kib_is_stored_cut_at_a_char_boundary_with_a_marker() {
    const MAX_ERROR_BYTES: usize = 16 * 1024;
    let fx = Fixture::new().await;
    // The fixture's lease owns the conversation; a claim needs it free.
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let run = NewRun {
        max_attempts: 1,
        ..NewRun::turn(fx.key.clone(), json!({}))
    };
    let queued = fx.store.submit(run).await.unwrap();
    let claim = fx
        .store
        .claim(&worker, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("a claim");
    // One ASCII byte, then 3-byte chars: byte 16 384 falls inside a char.
    let message = format!("x{}", "€".repeat(MAX_ERROR_BYTES));
    fx.store
        .fail(&claim, &Failure::new(TerminalStatus::Failed, &message))
        .await
        .unwrap();
    let record = fx
        .store
        .status(&fx.key.org, &queued.run)
        .await
        .unwrap()
        .unwrap();
    let stored = record.error.expect("the failure message");
    let kept = stored.strip_suffix('…').expect("the cut is marked");
    assert!(kept.len() <= MAX_ERROR_BYTES && kept.len() > MAX_ERROR_BYTES - 4);
    assert!(message.starts_with(kept), "a prefix of the message");
}
