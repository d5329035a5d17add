//! The `lobu` command on file stores: help, errors, export, import, listing, pruning.

mod common;

use common::{conversation, file_store, file_url, fill, key, lobu, lobu_err, lobu_ok};
use lobu_core::{Commit, Failure, NewRun, TerminalStatus, WorkerId};
use serde_json::{Value, json};

#[test]
fn every_command_has_help() {
    for command in ["export", "import", "migrate", "prune", "ls", "show", "runs"] {
        let out = lobu_ok(&[command, "--help"]);
        assert!(out.contains(&format!("Usage: lobu {command}")), "{out}");
    }
    assert!(lobu_ok(&["--help"]).contains("migrate"));
}

#[test]
fn usage_errors_exit_2_and_store_errors_exit_1_naming_the_problem() {
    let out = lobu(&["ls", "--store", "file:x"]);
    assert_eq!(out.status.code(), Some(2), "missing --org and --agent");
    let err = lobu_err(&[
        "ls",
        "--store",
        "mysql://u:hunter2@h/db",
        "--org",
        "o",
        "--agent",
        "a",
    ]);
    assert!(
        err.contains("not a store URL") && !err.contains("hunter2"),
        "{err}"
    );
    let err = lobu_err(&[
        "ls",
        "--store",
        "file:/nonexistent/lobu",
        "--org",
        "o",
        "--agent",
        "a",
    ]);
    assert!(
        err.contains("no lobu file store at /nonexistent/lobu"),
        "{err}"
    );
    let out = lobu(&[
        "prune",
        "--store",
        "file:/nonexistent/lobu",
        "--runs",
        "soon",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"soon\" is not a duration"), "{err}");
}

#[tokio::test]
async fn export_then_import_into_another_store_gives_the_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = file_store(a.path()).await;
    let conversations = [
        conversation(key("acme", "bot", "c1"), 3, 2),
        conversation(key("acme", "bot", "telegram:42 / ü"), 9, 5),
        conversation(key("acme", "helper", "c1"), 4, 1),
        conversation(key("globex", "bot", "c1"), 7, 1),
    ];
    fill(&source, &conversations).await;
    let export = a.path().join("all.jsonl");
    let (from, to) = (file_url(a.path()), file_url(&b.path().join("new")));
    lobu_ok(&["export", "--from", &from, "--out", export.to_str().unwrap()]);
    let documents = std::fs::read(&export).unwrap();
    let expected: Vec<u8> = conversations.iter().flat_map(|c| c.to_document()).collect();
    assert_eq!(documents, expected, "key order, byte for byte");

    let out = lobu_ok(&["import", "--to", &to, export.to_str().unwrap()]);
    assert_eq!(out.matches("written").count(), 4, "{out}");
    let again = lobu_ok(&["import", "--to", &to, export.to_str().unwrap()]);
    assert_eq!(again.matches("unchanged").count(), 4, "{again}");
    assert_eq!(lobu_ok(&["export", "--from", &to]).into_bytes(), documents);

    let one = lobu_ok(&[
        "export",
        "--from",
        &to,
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "c1",
    ]);
    assert_eq!(one.into_bytes(), conversations[0].to_document());
    let agent = lobu_ok(&["export", "--from", &to, "--org", "acme", "--agent", "bot"]);
    assert_eq!(agent.matches("\"lobu_export\"").count(), 2);
    let org = lobu_ok(&["export", "--from", &to, "--org", "acme"]);
    assert_eq!(org.matches("\"lobu_export\"").count(), 3);
    let err = lobu_err(&[
        "export",
        "--from",
        &to,
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "nope",
    ]);
    assert!(err.contains("has no transcript"), "{err}");
}

#[tokio::test]
async fn an_import_never_overwrites_another_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let mine = conversation(key("acme", "bot", "c1"), 3, 2);
    fill(&store, std::slice::from_ref(&mine)).await;
    drop(store);
    let other = conversation(key("acme", "bot", "c1"), 3, 3);
    let file = dir.path().join("other.jsonl");
    std::fs::write(&file, other.to_document()).unwrap();
    let err = lobu_err(&[
        "import",
        "--to",
        &file_url(dir.path()),
        file.to_str().unwrap(),
    ]);
    assert!(
        err.contains("refused") && err.contains("already has a head"),
        "{err}"
    );
    let kept = lobu_ok(&["export", "--from", &file_url(dir.path())]);
    assert_eq!(kept.into_bytes(), mine.to_document());
}

/// A pi session of version 1: no `version` in the header, entries without ids.
fn pi_version_1(messages: usize) -> Vec<u8> {
    let mut lines = vec![
        json!({"type": "session", "id": "pi-v1", "timestamp": "2025-01-01T00:00:00Z", "cwd": "/w"}),
    ];
    for i in 0..messages {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        lines.push(json!({"type": "message", "timestamp": "2025-01-01T00:00:01Z", "message": {"role": role, "content": format!("message {i}")}}));
    }
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

#[test]
fn a_version_1_pi_session_imports_as_version_3_and_pages_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("session.jsonl");
    std::fs::write(&session, pi_version_1(1000)).unwrap();
    let to = file_url(&dir.path().join("store"));
    let ids = [
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "from-pi",
    ];
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "--to", &to];
        args.extend_from_slice(extra);
        args.push(session.to_str().unwrap());
        lobu(&args)
    };
    let out = import(&ids);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 1 to 3"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("written"));
    let again = import(&ids);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("unchanged"),
        "{again:?}"
    );
    let shown: Value = serde_json::from_str(&lobu_ok(&[
        "show",
        "--store",
        &to,
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "from-pi",
        "--messages",
        "200",
        "--json",
    ]))
    .unwrap();
    assert_eq!(shown["stats"]["messageCount"], 1000);
    assert_eq!(shown["skippedLines"], 0);
    let messages = shown["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 200);
    assert_eq!(
        messages[199]["content"], "message 999",
        "the last messages, in order"
    );
    assert!(
        messages.iter().all(|m| m["id"].is_string()),
        "migrated entries have ids"
    );
    let exported = lobu_ok(&["export", "--from", &to]);
    assert!(exported.lines().nth(1).unwrap().contains("\"version\":3"));

    let err = String::from_utf8(import(&["--org", "acme"]).stderr).unwrap();
    assert!(err.contains("together") || err.contains("--agent"), "{err}");
    let not_pi = dir.path().join("notes.txt");
    std::fs::write(&not_pi, "just some notes\n").unwrap();
    let err = lobu_err(&["import", "--to", &to, not_pi.to_str().unwrap()]);
    assert!(
        err.contains("neither a lobu export document nor a pi session file"),
        "{err}"
    );
}

#[tokio::test]
async fn ls_show_and_runs_describe_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let conversations: Vec<_> = (0..3)
        .map(|i| conversation(key("acme", "bot", &format!("c{i}")), 2, i + 1))
        .collect();
    fill(&store, &conversations).await;
    let worker = WorkerId::generate();
    let failing = store
        .queue
        .submit(NewRun::turn(key("acme", "bot", "c0"), json!({"text": "x"})))
        .await
        .unwrap();
    let claim = store
        .queue
        .claim(&worker, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let failure =
        Failure::new(TerminalStatus::Failed, "the model said no").retry(lobu_core::Retry::Never);
    store.queue.fail(&claim, &failure).await.unwrap();
    let waiting = store
        .queue
        .submit(NewRun::turn(key("acme", "bot", "c1"), json!({"text": "y"})))
        .await
        .unwrap();
    store
        .queue
        .submit(NewRun::turn(key("acme", "bot", "c2"), json!({"text": "z"})))
        .await
        .unwrap();
    drop(store);

    let url = file_url(dir.path());
    let ls = lobu_ok(&[
        "ls", "--store", &url, "--org", "acme", "--agent", "bot", "--limit", "2",
    ]);
    assert!(
        ls.contains("c0") && ls.contains("c1") && !ls.contains("c2 "),
        "{ls}"
    );
    assert!(ls.contains("more: --cursor"), "{ls}");
    let page: Value = serde_json::from_str(&lobu_ok(&[
        "ls", "--store", &url, "--org", "acme", "--agent", "bot", "--json",
    ]))
    .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);

    let show = lobu_ok(&[
        "show",
        "--store",
        &url,
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "c2",
        "--messages",
        "2",
    ]);
    assert!(show.contains("6 messages (3 user, 3 assistant)"), "{show}");
    assert!(show.contains("[assistant] answer 2"), "{show}");

    let failed = lobu_ok(&[
        "runs", "--store", &url, "--org", "acme", "--state", "failed",
    ]);
    assert!(failed.contains(failing.run.as_str()) && failed.contains("the model said no"));
    assert!(!failed.contains(waiting.run.as_str()), "{failed}");
    let attention: Value = serde_json::from_str(&lobu_ok(&[
        "runs", "--store", &url, "--org", "acme", "--json",
    ]))
    .unwrap();
    assert_eq!(
        attention["items"].as_array().unwrap().len(),
        3,
        "one failed, two waiting"
    );
    let other: Value = serde_json::from_str(&lobu_ok(&[
        "runs", "--store", &url, "--org", "globex", "--state", "all", "--json",
    ]))
    .unwrap();
    assert!(other["items"].as_array().unwrap().is_empty());
    let err = lobu_err(&["runs", "--store", &url, "--org", "acme", "--limit", "0"]);
    assert!(err.contains("limit"), "{err}");
}

#[tokio::test]
async fn prune_removes_finished_runs_past_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path()).await;
    let key = key("acme", "bot", "c1");
    let run = store
        .queue
        .submit(NewRun::turn(key.clone(), json!({"text": "x"})))
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let claim = store
        .queue
        .claim(&worker, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let commit = Commit::transcript(common::transcript("c1", 1).into(), None);
    store.queue.complete(&claim, commit).await.unwrap();
    drop(store);
    let url = file_url(dir.path());
    let kept = lobu_ok(&["prune", "--store", &url]);
    assert!(kept.contains("0 finished runs"), "{kept}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let dry = lobu_ok(&[
        "prune",
        "--store",
        &url,
        "--runs",
        "1s",
        "--events",
        "1s",
        "--dry-run",
    ]);
    assert!(
        dry.contains("would remove") && dry.contains("1 finished runs"),
        "{dry}"
    );
    let all = lobu_ok(&["runs", "--store", &url, "--org", "acme", "--state", "all"]);
    assert!(
        all.contains(run.run.as_str()),
        "a dry run removes nothing: {all}"
    );
    let err = lobu_err(&[
        "prune",
        "--store",
        &url,
        "--runs",
        "2d",
        "--failed-runs",
        "1d",
    ]);
    assert!(
        err.contains("--failed-runs must be at least --runs"),
        "{err}"
    );
    let out = lobu(&["prune", "--store", &url, "--idle-agent", "bot"]);
    assert_eq!(out.status.code(), Some(2), "AGENT=DURATION is required");
    let pruned = lobu_ok(&["prune", "--store", &url, "--runs", "1s", "--events", "1s"]);
    assert!(pruned.contains("1 finished runs"), "{pruned}");
    let all = lobu_ok(&["runs", "--store", &url, "--org", "acme", "--state", "all"]);
    assert!(!all.contains(run.run.as_str()), "{all}");
    let show = lobu_ok(&[
        "show",
        "--store",
        &url,
        "--org",
        "acme",
        "--agent",
        "bot",
        "--conversation",
        "c1",
    ]);
    assert!(
        show.contains("2 messages"),
        "the transcript outlives its run: {show}"
    );
}
