//! A reset run: forget the conversation, under its lease, behind its earlier runs.

use lobu_core::{ConversationKey, TerminalStatus};

use crate::execute::Outcome;
use crate::runtime::Shared;
use crate::turn::describe;

/// Clear every snapshot of `key` and drop this process's cached copy; write no snapshot.
/// Other replicas' cached copies die with the version: they are only used after a head check,
/// and the store never hands out a version twice.
pub(crate) async fn run_reset(shared: &Shared, key: &ConversationKey) -> Outcome {
    // Drop the cached copy first: even if the clear fails, nothing stale is served from here.
    shared.cache.remove(key);
    match shared.backend.sessions.clear(key).await {
        Ok(deleted) => {
            shared.cache.remove(key);
            tracing::info!(deleted, "conversation reset");
            Outcome::Completed(Some(serde_json::json!({ "deleted": deleted })))
        }
        Err(e) => Outcome::Failed(
            TerminalStatus::Failed,
            format!("clearing the conversation failed: {}", describe(&e)),
        ),
    }
}
