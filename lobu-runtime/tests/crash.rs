//! A replica killed with SIGKILL mid-turn loses nothing: another runtime finishes the turn
//! from the last completed transcript, and each completed turn is in it exactly once.
//!
//! The killed replica is this test binary itself, re-run as a child process with only the
//! ignored `crash_child` test selected and the store named in an environment variable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use lobu_core::{Backend, RunStatus};
use lobu_runtime::Runtime;

use common::*;

const CHILD_STORE: &str = "LOBU_RUNTIME_CRASH_CHILD_STORE";
const CHILD_SCRATCH: &str = "LOBU_RUNTIME_CRASH_CHILD_SCRATCH";

/// The child replica: runs a worker on the given store until it is killed.
#[test]
#[ignore = "the child process of the SIGKILL tests, which start it themselves"]
fn crash_child() {
    let (Ok(spec), Ok(scratch)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_SCRATCH)) else {
        panic!("crash_child is started by the SIGKILL tests with {CHILD_STORE} set");
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let backend = open(&spec).await;
        // `/gate` never opens here: the turn hangs until the process is killed.
        let agent = ScriptAgent::new();
        let runtime = expiring(Runtime::builder(backend, agent.arc()))
            .scratch_root(PathBuf::from(scratch))
            .build()
            .expect("runtime");
        runtime.run().await.expect("worker loop");
    });
}

async fn open(spec: &str) -> Backend {
    match spec.split_once(':') {
        Some(("pg", name)) => pg::backend_named(name).await,
        Some(("file", root)) => stores::open_file(Path::new(root)).await,
        _ => panic!("unknown store spec {spec:?}"),
    }
}

/// The child process, killed when dropped, so a failing test never leaves it running.
struct ChildReplica(Child);

impl Drop for ChildReplica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(spec: &str, scratch: &Path) -> ChildReplica {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CHILD_STORE, spec)
        .env(CHILD_SCRATCH, scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child replica");
    ChildReplica(child)
}

/// Whether an agent in `scratch` has started the turn `text` (the test agent writes the
/// text to `work.txt` in its scratch directory first thing).
fn turn_started(scratch: &Path, text: &str) -> bool {
    let Ok(dirs) = std::fs::read_dir(scratch) else {
        return false;
    };
    dirs.flatten()
        .any(|d| std::fs::read_to_string(d.path().join("work.txt")).is_ok_and(|t| t == text))
}

async fn a_killed_replicas_turn_is_finished_by_another(store: Store) {
    let fx = Fixture::new(store).await;
    let child_scratch = fx.dir.path().join("child-scratch");
    let mut child = spawn_child(&fx.spec(), &child_scratch);

    // This process is a gateway only while the child works.
    let agent = ScriptAgent::new();
    agent.open_gate();
    let rt = expiring(fx.builder(&agent)).build().unwrap();
    let k = key("telegram:7");
    let first = send(&rt, &k, "first").await;
    assert_eq!(finished(&rt, &k, &first).await.status, RunStatus::Completed);
    let second = send(&rt, &k, "second").await;
    assert_eq!(
        finished(&rt, &k, &second).await.status,
        RunStatus::Completed
    );
    let before = head(&fx.backend, &k).await;
    assert_eq!(user_texts(&before), ["first", "second"]);

    let run = send(&rt, &k, "/gate").await;
    let scratch = child_scratch.clone();
    eventually("the child to be mid-turn", move || {
        let started = turn_started(&scratch, "/gate");
        async move { started.then_some(()) }
    })
    .await;
    child.0.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
    let status = child.0.wait().expect("reap the child");
    assert!(!status.success());
    assert_eq!(
        head(&fx.backend, &k).await,
        before,
        "the killed turn wrote nothing"
    );

    // Its claim and lease expire; this runtime takes the turn over.
    let worker = start(&rt);
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    // The killed attempt counts; a claim that lapses on a loaded machine may add one.
    assert!(
        record.attempts >= 2,
        "the killed attempt counts: {record:?}"
    );
    let turns = agent.turns();
    assert_eq!(turns.len(), 1);
    assert_eq!(
        turns[0].seen,
        ["first", "second"],
        "re-run from the last completed transcript"
    );
    let after = head(&fx.backend, &k).await;
    assert!(after.starts_with(&before));
    assert_eq!(user_texts(&after), ["first", "second", "/gate"]);
    assert_eq!(
        assistant_texts(&after),
        [
            "You said: first (turn 1)",
            "You said: second (turn 2)",
            "You said: /gate (turn 3)"
        ]
    );
    let next = send(&rt, &k, "next").await;
    finished(&rt, &k, &next).await;
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["first", "second", "/gate", "next"]
    );
    stop(&rt, worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_turn_on_the_file_store_loses_nothing() {
    a_killed_replicas_turn_is_finished_by_another(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_turn_on_postgres_loses_nothing() {
    a_killed_replicas_turn_is_finished_by_another(Store::Pg).await;
}
