//! A hand-damaged `state.json` whose committed lengths say more than the files hold is
//! `Corrupt`: never a panic, never an allocation the size of the damaged number.

mod common;

use bytes::Bytes;
use lobu_core::{ErrorKind, RunId, SessionStore};
use serde_json::Value;

use common::{Fixture, write};

/// Committed lengths a damaged record may claim: a terabyte, the largest number, one byte
/// past the end of the file.
fn damaged_lengths(real: u64) -> [u64; 3] {
    [1 << 40, u64::MAX, real + 1]
}

/// Set `head.<field>` of the fixture's `state.json` to `value`.
fn damage(fx: &Fixture, field: &str, value: u64) {
    let path = fx.store.conversation_dir(&fx.key).join("state.json");
    let mut state: Value =
        serde_json::from_slice(&lobu_store_file::read_record(&path).unwrap()).unwrap();
    state["head"][field] = Value::from(value);
    // Written back as format 1 wrote it (one JSON document), which still reads.
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
}

fn file_len(fx: &Fixture, name: &str) -> u64 {
    let path = fx.store.conversation_dir(&fx.key).join(name);
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn hydrate_of_a_state_claiming_more_transcript_than_the_file_holds_is_corrupt() {
    let fx = Fixture::new().await;
    let transcript = fx.store.transcript_path(&fx.key).unwrap().unwrap();
    let len = std::fs::metadata(transcript).unwrap().len();
    for bytes in damaged_lengths(len) {
        damage(&fx, "bytes", bytes);
        let error = fx.store.hydrate(&fx.key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt, "bytes {bytes}: {error}");
    }
}

#[tokio::test]
async fn persist_over_a_state_claiming_more_history_than_the_file_holds_is_corrupt() {
    let fx = Fixture::new().await;
    let next = Bytes::from(format!(
        "{}{{\"type\":\"message\"}}\n",
        std::str::from_utf8(&fx.bytes).unwrap()
    ));
    for history_bytes in damaged_lengths(file_len(&fx, "history.jsonl")) {
        damage(&fx, "history_bytes", history_bytes);
        let result = fx
            .store
            .persist(
                &fx.key,
                write(&RunId::generate(), &next, Some(fx.head), fx.lease.fence),
            )
            .await;
        let error = result.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::Corrupt,
            "history_bytes {history_bytes}: {error}"
        );
    }
}
