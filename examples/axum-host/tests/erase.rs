//! Erasure over HTTP on both stores: a conversation, an agent's conversations, a whole org.
//! Afterwards no byte of the store (no file under the data directory, no row of any table)
//! holds the erased org's id, conversation ids or text, and the other org's bytes are
//! exactly what they were.

mod common;

use common::dump::{of_org, settled_store_bytes};
use common::{Api, Store, TestHost};
use reqwest::StatusCode;
use serde_json::json;

const KEYS: &str = "erase-key-0001=org-7f3a-erase,keep-key-0002=org-keep-7f3a";
/// In the erased org's org id, conversation ids and every message it sent.
const MARKER: &str = "7f3a-erase";

on_both_stores!(erasure_leaves_no_byte_of_the_org_and_the_other_org_as_it_was);

async fn fill(api: &Api, agent: &str, conversation: &str, text: &str) {
    api.turn(agent, conversation, text).await;
    api.turn(agent, conversation, &format!("{text} again"))
        .await;
}

async fn erasure_leaves_no_byte_of_the_org_and_the_other_org_as_it_was(store: Store) {
    let t = TestHost::start_with_keys(store, Some(KEYS)).await;
    let (gone, kept) = (
        t.api_with_key("erase-key-0001"),
        t.api_with_key("keep-key-0002"),
    );
    let one = format!("c1-{MARKER}");
    let two = format!("c2-{MARKER}");
    let three = format!("c3-{MARKER}");
    fill(&gone, "support", &one, &format!("secret {MARKER} one")).await;
    fill(&gone, "support", &two, &format!("secret {MARKER} two")).await;
    fill(&gone, "sales", &three, &format!("secret {MARKER} three")).await;
    // A run that fails leaves a forensic copy of its attempt; one with a key leaves the key.
    let failed = gone
        .post_json(
            &format!("{}/messages", Api::conversation("sales", &three)),
            &json!({"text": "/fail", "idempotency_key": format!("key-{MARKER}")}),
        )
        .await;
    gone.wait_run(failed.json["run_id"].as_str().unwrap()).await;
    fill(&kept, "support", "c1", "kept text").await;
    let before = settled_store_bytes(&t).await;
    let kept_before = of_org(&before, "org-keep-7f3a");
    assert!(!kept_before.is_empty());

    let conversation = gone.delete(&Api::conversation("support", &one)).await;
    assert_eq!(conversation.status, StatusCode::OK, "{conversation:?}");
    assert_eq!(conversation.json["conversations"], 1, "{conversation:?}");
    assert_eq!(conversation.json["runs"], 2, "{conversation:?}");
    assert!(gone.lines("support", &one).await.is_empty());
    assert_eq!(gone.lines("support", &two).await.len(), 4);

    let agent = gone.delete("/v1/agents/support/conversations").await;
    assert_eq!(agent.status, StatusCode::OK, "{agent:?}");
    assert_eq!(agent.json["conversations"], 1, "{agent:?}");
    let listed = gone.get("/v1/agents/support/conversations").await;
    assert_eq!(listed.json["conversations"], json!([]), "{listed:?}");
    assert_eq!(gone.lines("sales", &three).await.len(), 4);

    let org = gone.delete("/v1/data").await;
    assert_eq!(org.status, StatusCode::OK, "{org:?}");
    assert_eq!(org.json["conversations"], 1, "{org:?}");
    assert_eq!(org.json["runs"], 3, "{org:?}");
    let again = gone.delete("/v1/data").await;
    assert_eq!(
        again.json,
        json!({"conversations": 0, "snapshots": 0, "runs": 0, "events": 0})
    );

    let after = settled_store_bytes(&t).await;
    for (name, bytes) in &after {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !name.contains(MARKER) && !text.contains(MARKER),
            "{name} still holds the erased org's data"
        );
    }
    assert_eq!(
        of_org(&after, "org-keep-7f3a"),
        kept_before,
        "the other org is untouched"
    );
    assert_eq!(kept.lines("support", "c1").await.len(), 4);
    t.finish().await;
}
