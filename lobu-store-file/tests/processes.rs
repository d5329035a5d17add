//! Several stores on one root: two `FileStore` values in this process, and real child
//! processes (this test binary re-run with only the ignored `child` test selected and its
//! task in an environment variable). They share leases, fences, transcripts and the queue.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, Fence, NewRun, Persist, RunId, RunQueue, RunStatus,
    SessionStore, TerminalStatus, Version, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(600);
const CHILD_TASK: &str = "LOBU_STORE_FILE_CHILD_TASK";

fn key(conversation: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", conversation).unwrap()
}

fn completed(text: &str, expected: Option<Version>, fence: Fence) -> Persist {
    Persist {
        run: RunId::generate(),
        status: TerminalStatus::Completed,
        transcript: Bytes::from(text.to_owned()),
        expected,
        fence,
        base_len: None,
    }
}

#[tokio::test]
async fn two_stores_on_one_root_share_leases_fences_and_transcripts() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path()).await.unwrap();
    let b = FileStore::open(dir.path()).await.unwrap();
    let k = key("telegram:1");
    let first = a.try_acquire(&k, LONG).await.unwrap().expect("free");
    assert!(
        b.try_acquire(&k, LONG).await.unwrap().is_none(),
        "a's lease is busy for b"
    );
    let v1 = b
        .persist(&k, completed("one\n", None, first.fence))
        .await
        .unwrap();
    assert_eq!(a.hydrate(&k).await.unwrap().unwrap().transcript, "one\n");

    ConversationLocks::release(&a, &first).await.unwrap();
    let second = b.try_acquire(&k, LONG).await.unwrap().expect("released");
    assert!(second.fence > first.fence);
    let zombie = a
        .persist(&k, completed("one\nzombie\n", Some(v1), first.fence))
        .await;
    assert_eq!(zombie.unwrap_err().kind(), lobu_core::ErrorKind::Fenced);
    let v2 = a
        .persist(&k, completed("one\ntwo\n", Some(v1), second.fence))
        .await
        .unwrap();
    assert_eq!(b.head(&k).await.unwrap(), Some(v2));
    assert_eq!(b.clear(&k, second.fence).await.unwrap(), 2);
    assert_eq!(a.hydrate(&k).await.unwrap(), None);
}

#[tokio::test]
async fn two_stores_on_one_root_share_one_queue() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStore::open(dir.path()).await.unwrap();
    let b = FileStore::open(dir.path())
        .await
        .unwrap()
        .with_poll_interval(Duration::from_millis(20));
    let (x, y) = (key("x"), key("y"));
    let mut runs = Vec::new();
    for n in 0..2 {
        runs.push(
            a.submit(NewRun::turn(x.clone(), json!({ "n": n })))
                .await
                .unwrap()
                .run,
        );
    }
    let mut idempotent = NewRun::turn(y.clone(), json!({}));
    idempotent.idempotency_key = Some("client-retry".parse().unwrap());
    let on_y = a.submit(idempotent.clone()).await.unwrap();
    let again = b.submit(idempotent).await.unwrap();
    assert_eq!((again.run, again.created), (on_y.run.clone(), false));
    assert_eq!(b.depth().await.unwrap(), 3);

    let (wa, wb) = (WorkerId::generate(), WorkerId::generate());
    let first = b.claim(&wb, LONG).await.unwrap().expect("x's first run");
    assert_eq!(first.run, runs[0]);
    let second = a.claim(&wa, LONG).await.unwrap().expect("y's run");
    assert_eq!(second.run, on_y.run);
    assert!(
        a.claim(&wa, LONG).await.unwrap().is_none(),
        "x is busy in b"
    );
    b.complete(&first, Commit::output(None)).await.unwrap();
    let third = a.claim(&wa, LONG).await.unwrap().expect("x's second run");
    assert_eq!(third.run, runs[1]);
    let seen = a.status(&x.org, &runs[0]).await.unwrap().unwrap();
    assert_eq!(seen.status, RunStatus::Completed);

    // b cannot be woken by a's submit (another process, as far as b knows): it polls.
    let waiter = tokio::spawn(async move { b.wait_for_work(Duration::from_secs(3600)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.submit(NewRun::turn(key("z"), json!({}))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the poll found the run well before the hour")
        .unwrap();
}

/// Run this binary's `child` test with `task` (it prints `RESULT <json>` lines).
fn spawn_child(task: &Value) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_TASK, task.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a child process")
}

fn results(output: Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "the child failed: {:?}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .lines()
        // The harness may print `test child ... ` on the same line first.
        .filter_map(|line| line.split_once("RESULT ").map(|(_, r)| r))
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// Start one child per task and let them all go at once (each says it is ready with a file
/// in a barrier directory, then waits for `go`), so they truly race; their results.
fn run_children(tasks: &[Value]) -> Vec<Vec<Value>> {
    let barrier = tempfile::tempdir().unwrap();
    let children: Vec<_> = tasks
        .iter()
        .map(|task| {
            let mut task = task.clone();
            task["barrier"] = json!(root_of(barrier.path()));
            spawn_child(&task)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(barrier.path()).unwrap().count() < tasks.len() {
        assert!(Instant::now() < deadline, "the children never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(barrier.path().join("go"), b"").unwrap();
    let outputs = children.into_iter().map(|c| c.wait_with_output().unwrap());
    outputs.map(results).collect()
}

/// In a child: say this process is ready, then wait for the parent's `go`.
fn wait_at_barrier(barrier: &Path) {
    std::fs::write(barrier.join(format!("ready-{}", std::process::id())), b"").unwrap();
    while !barrier.join("go").exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn root_of(dir: &Path) -> String {
    dir.to_str().expect("a UTF-8 temporary path").to_owned()
}

#[tokio::test]
async fn of_racing_processes_exactly_one_acquires_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let k = key("raced");
    let task = json!({"task": "acquire", "root": root_of(dir.path()), "conversation": "raced"});
    let results: Vec<Value> = run_children(&vec![task; 4]).into_iter().flatten().collect();
    let fences: Vec<u64> = results.iter().filter_map(|r| r["fence"].as_u64()).collect();
    assert_eq!(fences.len(), 1, "exactly one process acquired: {results:?}");
    assert_eq!(results.len(), 4, "every process answered");
    // The winner exited; its lease is data and stays live until it expires.
    assert!(store.try_acquire(&k, LONG).await.unwrap().is_none());
    let write = completed("from the parent\n", None, Fence(fences[0]));
    let version = store
        .persist(&k, write)
        .await
        .expect("the winner's fence is the newest");
    assert_eq!(store.head(&k).await.unwrap(), Some(version));
}

#[tokio::test]
async fn of_racing_processes_with_one_expected_version_exactly_one_persists() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let k = key("written");
    let lease = store.try_acquire(&k, LONG).await.unwrap().unwrap();
    let base = store
        .persist(&k, completed("base\n", None, lease.fence))
        .await
        .unwrap();
    let tasks: Vec<Value> = (0..4)
        .map(|n| {
            json!({"task": "persist", "root": root_of(dir.path()), "conversation": "written",
                   "fence": lease.fence.0, "expected": base.0, "text": format!("base\nwriter {n}\n")})
        })
        .collect();
    let results: Vec<Value> = run_children(&tasks).into_iter().flatten().collect();
    let winners: Vec<&Value> = results.iter().filter(|r| r["version"].is_u64()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let head = store.hydrate(&k).await.unwrap().unwrap();
    assert_eq!(Some(head.version.0), winners[0]["version"].as_u64());
    assert_eq!(
        Some(&*String::from_utf8_lossy(&head.transcript)),
        winners[0]["text"].as_str()
    );
}

#[tokio::test]
async fn processes_sharing_a_queue_claim_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let mut runs = Vec::new();
    for n in 0..24 {
        let conversation = key(&format!("c{}", n % 8));
        runs.push(
            store
                .submit(NewRun::turn(conversation, json!({ "n": n })))
                .await
                .unwrap()
                .run,
        );
    }
    let task = json!({"task": "work", "root": root_of(dir.path())});
    let results: Vec<Value> = run_children(&vec![task; 3]).into_iter().flatten().collect();
    let mut claimed: Vec<&str> = results.iter().filter_map(|r| r["run"].as_str()).collect();
    claimed.sort_unstable();
    let mut expected: Vec<&str> = runs.iter().map(RunId::as_str).collect();
    expected.sort_unstable();
    assert_eq!(claimed, expected, "every run claimed once, by one process");
    for run in &runs {
        let record = store.status(&key("c0").org, run).await.unwrap().unwrap();
        assert_eq!((record.status, record.attempts), (RunStatus::Completed, 1));
    }
    // Each claim owned its conversation: every commit extended the head its claim reported,
    // so each conversation holds its three runs' lines, first in, first out.
    for c in 0..8 {
        let head = store
            .hydrate(&key(&format!("c{c}")))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(head.transcript.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let wanted: Vec<String> = (0..3).map(|i| format!("n={}", c + 8 * i)).collect();
        assert_eq!(lines, wanted, "conversation c{c}");
    }
}

#[tokio::test]
async fn events_a_child_process_records_wake_the_parents_follower_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let k = key("followed");
    let run = store.submit(NewRun::turn(k.clone(), json!({}))).await;
    let run = run.unwrap().run;
    // Start the parent's watcher, then follow the run while the child works it.
    store
        .wait_for_run(&k.org, &run, Instant::now(), Duration::ZERO)
        .await;
    let since = Instant::now();
    let follower = tokio::spawn({
        let (store, org, run) = (store.clone(), k.org.clone(), run.clone());
        async move {
            store.wait_for_run(&org, &run, since, LONG).await;
            Instant::now()
        }
    });
    let task = json!({"task": "record", "root": root_of(dir.path())});
    let results = tokio::task::spawn_blocking(move || run_children(&[task]))
        .await
        .unwrap();
    let exited = Instant::now();
    let woken = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the child's changes woke the parent's follower")
        .unwrap();
    let after_exit = woken.saturating_duration_since(exited);
    assert!(
        after_exit < Duration::from_secs(1),
        "woken {after_exit:?} after the exit"
    );
    assert_eq!(results[0][0], json!({"run": run.as_str(), "last": 3}));
    let page = store.read_events(&k.org, &run, 0, 10).await.unwrap();
    let page = page.expect("the run");
    let events = page
        .events
        .iter()
        .map(|e| (e.seq, e.attempt, e.data.clone()));
    let wanted = (1..=3).map(|n| (n, 1, json!({ "n": n }).to_string()));
    assert!(events.eq(wanted), "{:?}", page.events);
    assert_eq!(page.record.status, RunStatus::Completed);
    assert!(page.ends_the_run(0));
}

/// The child process: does one task on the store its parent names, prints `RESULT` lines.
#[test]
#[ignore = "run by the multi-process tests, which start it themselves"]
fn child() {
    let Ok(task) = std::env::var(CHILD_TASK) else {
        panic!("the child test is started by the multi-process tests with {CHILD_TASK} set");
    };
    let task: Value = serde_json::from_str(&task).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = FileStore::open(task["root"].as_str().unwrap())
            .await
            .unwrap();
        let conversation = task["conversation"].as_str().map(key);
        wait_at_barrier(Path::new(task["barrier"].as_str().unwrap()));
        match task["task"].as_str().unwrap() {
            "acquire" => {
                let lease = store
                    .try_acquire(&conversation.unwrap(), LONG)
                    .await
                    .unwrap();
                println!("RESULT {}", json!({"fence": lease.map(|l| l.fence.0)}));
            }
            "persist" => {
                let text = task["text"].as_str().unwrap();
                let expected = Some(Version(task["expected"].as_u64().unwrap()));
                let write = completed(text, expected, Fence(task["fence"].as_u64().unwrap()));
                let result = store.persist(&conversation.unwrap(), write).await;
                let version = result.as_ref().ok().map(|v| v.0);
                let error = result.err().map(|e| e.kind().as_str());
                println!(
                    "RESULT {}",
                    json!({"version": version, "error": error, "text": text})
                );
            }
            "work" => work(&store).await,
            "record" => record(&store).await,
            other => panic!("unknown task {other}"),
        }
    });
}

/// Claim the one run, record three events in two appends and complete it.
async fn record(store: &FileStore) {
    let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    let claim = claim.expect("the parent's run");
    let n = |n: u64| json!({ "n": n }).to_string();
    store.record_events(&claim, &[n(1), n(2)]).await.unwrap();
    let last = store.record_events(&claim, &[n(3)]).await.unwrap();
    store.complete(&claim, Commit::output(None)).await.unwrap();
    println!(
        "RESULT {}",
        json!({"run": claim.run.as_str(), "last": last})
    );
}

/// Claim and complete until nothing is pending any more.
async fn work(store: &FileStore) {
    let worker = WorkerId::generate();
    loop {
        match store.claim(&worker, LONG).await.unwrap() {
            Some(claim) => {
                println!("RESULT {}", json!({"run": claim.run.as_str()}));
                // The claim owns the conversation: its head is the one the claim reported.
                let mut text = match store.hydrate(&claim.key).await.unwrap() {
                    Some(head) => {
                        assert_eq!(Some(head.version), claim.head);
                        String::from_utf8(head.transcript.to_vec()).unwrap()
                    }
                    None => String::new(),
                };
                text.push_str(&format!("n={}\n", claim.payload["n"]));
                let commit = Commit::transcript(Bytes::from(text), claim.head);
                store.complete(&claim, commit).await.unwrap();
            }
            None if store.depth().await.unwrap() == 0 => return,
            // Another process holds the front of the lanes that still wait.
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
