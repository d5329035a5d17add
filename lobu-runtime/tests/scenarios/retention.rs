//! Retention that runs by itself: old finished runs and their events go, transcripts stay,
//! and one replica at a time runs a pass.

use std::time::Duration;

use lobu_core::{ErrorKind, RunStatus};

use crate::common::stall::Stall;
use crate::common::*;

pub async fn retention_removes_old_finished_runs_and_keeps_every_transcript(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = quick(fx.builder(&agent))
        .run_retention(Duration::from_millis(200))
        .event_retention(Duration::from_millis(200))
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "one").await;
    assert_eq!(finished(&rt, &k, &first).await.status, RunStatus::Completed);
    let second = send(&rt, &k, "two").await;
    finished(&rt, &k, &second).await;
    eventually("the finished runs to be pruned", || async {
        let gone = rt.status(&k.org, &first).await.err()?;
        (gone.kind() == ErrorKind::NotFound).then_some(())
    })
    .await;
    // A pass adds to the metrics when it ends, a moment after its steps took effect.
    eventually("the pass to be counted", || async {
        let metrics = rt.metrics();
        (metrics.runs_pruned >= 1 && metrics.retention_passes >= 1).then_some(())
    })
    .await;
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["one", "two"],
        "transcripts never depend on run retention"
    );
    let third = send(&rt, &k, "three").await;
    assert_eq!(finished(&rt, &k, &third).await.status, RunStatus::Completed);
    stop(&rt, worker).await;
}

pub async fn two_replicas_never_run_a_retention_pass_at_the_same_time(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    // Each pass's run pruning takes 700 ms; passes are due every second on both replicas.
    stall.slow_prunes(Duration::from_millis(700));
    let replica = |backend| {
        quick(fx.builder_on(backend, &agent))
            .run_retention(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let (a, b) = (replica(stall.backend()), replica(stall.backend()));
    let (a_worker, b_worker) = (start(&a), start(&b));
    eventually("several retention passes", || async {
        let passes = a.metrics().retention_passes + b.metrics().retention_passes;
        (passes >= 4).then_some(())
    })
    .await;
    assert_eq!(stall.most_prunes_at_once(), 1, "one pass at a time");
    stop(&a, a_worker).await;
    stop(&b, b_worker).await;
}

pub async fn an_erased_conversation_is_gone_and_starts_over_from_nothing(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = quick(fx.builder(&agent)).build().unwrap();
    let worker = start(&rt);
    let (k, kept) = (key("c1"), key("c2"));
    let first = send(&rt, &k, "secret one").await;
    finished(&rt, &k, &first).await;
    let other = send(&rt, &kept, "stays").await;
    finished(&rt, &kept, &other).await;
    let report = rt
        .erase(&lobu_core::EraseScope::Conversation(k.clone()))
        .await
        .unwrap();
    assert_eq!((report.conversations, report.runs), (1, 1), "{report:?}");
    let gone = rt.status(&k.org, &first).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert!(
        rt.messages(&k, None, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    let again = send(&rt, &k, "hello again").await;
    finished(&rt, &k, &again).await;
    let turn = agent
        .turns()
        .into_iter()
        .find(|t| t.text == "hello again")
        .unwrap();
    assert!(
        turn.seen.is_empty(),
        "the next turn starts from nothing: {:?}",
        turn.seen
    );
    assert_eq!(user_texts(&head(&fx.backend, &kept).await), ["stays"]);
    stop(&rt, worker).await;
}

/// Every run record of the test's org, counted through `RunQueue::runs`.
async fn run_records(backend: &lobu_core::Backend) -> usize {
    let org = key("c").org;
    let (mut count, mut cursor) = (0, None::<String>);
    loop {
        let filter = lobu_core::RunFilter::all();
        let page = backend
            .queue
            .runs(&org, &filter, cursor.as_deref(), 200)
            .await;
        let page = page.expect("runs");
        count += page.items.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return count,
        }
    }
}

/// Files under `dir`, however deep.
fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            _ => 1,
        })
        .sum()
}

/// With retention on, 10,000 turns over 1,000 conversations leave a bounded number of run
/// records (and, on files, of files): what stays grows with the conversations and the
/// retention window, not with the turns.
pub async fn ten_thousand_turns_with_retention_keep_run_records_and_files_bounded(store: Store) {
    const CONVERSATIONS: usize = 1_000;
    const WAVES: usize = 10;
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = quick(fx.builder(&agent))
        .concurrency(8)
        .run_retention(Duration::from_millis(300))
        .event_retention(Duration::from_millis(300))
        .build()
        .unwrap();
    let worker = start(&rt);
    let keys: Vec<_> = (0..CONVERSATIONS).map(|i| key(&format!("c{i}"))).collect();
    let (mut most_records, mut files_after_first_wave) = (0, 0);
    for wave in 0..WAVES {
        for k in &keys {
            send(&rt, k, &format!("turn {wave}")).await;
        }
        // Runs are pruned 300 ms after they end, so the wave is awaited by the counters.
        let done = ((wave + 1) * CONVERSATIONS) as u64;
        eventually("the wave's turns", || async {
            (rt.metrics().runs_completed >= done).then_some(())
        })
        .await;
        most_records = most_records.max(run_records(&fx.backend).await);
        if wave == 0 {
            files_after_first_wave = files_under(fx.dir.path());
        }
    }
    assert!(
        most_records < 3 * CONVERSATIONS,
        "run records stay bounded: at most {most_records} after a wave of {CONVERSATIONS}"
    );
    eventually("every finished run pruned", || async {
        (run_records(&fx.backend).await == 0).then_some(())
    })
    .await;
    if store == Store::File {
        let files = files_under(fx.dir.path());
        assert!(
            files <= files_after_first_wave,
            "files grow with conversations, not turns: {files} after {WAVES} waves, \
             {files_after_first_wave} after one"
        );
    }
    assert_eq!(rt.metrics().attempts_failed, 0);
    for k in keys.iter().step_by(97) {
        let texts = user_texts(&head(&fx.backend, k).await);
        assert_eq!(texts.len(), WAVES, "{k}: every turn is in the transcript");
    }
    stop(&rt, worker).await;
}
