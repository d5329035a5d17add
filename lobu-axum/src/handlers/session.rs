//! A conversation's session: its messages, its stats, and reset.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lobu_core::transcript::{MessagePage, Stats};
use serde_json::{Value, json};

use crate::api::Api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{ConversationPath, PageParams, ResetParams};

/// `GET …/session/messages?cursor=&limit=`: lobu's `{"messages", "nextCursor", "hasMore",
/// "sessionId"}`; an unknown cursor starts at the beginning (as in lobu).
pub(crate) async fn messages<C: Caller>(
    State(api): State<Api>,
    caller: C,
    path: ConversationPath,
    page: PageParams,
) -> Result<Json<MessagePage>, ApiError> {
    let key = path.key(caller.org())?;
    let page = api
        .runtime
        .messages(&key, page.cursor.as_deref(), page.limit)
        .await?;
    Ok(Json(page))
}

/// `GET …/session/stats`: lobu's message and token counts and the current model.
pub(crate) async fn stats<C: Caller>(
    State(api): State<Api>,
    caller: C,
    path: ConversationPath,
) -> Result<Json<Stats>, ApiError> {
    let key = path.key(caller.org())?;
    Ok(Json(api.runtime.stats(&key).await?))
}

/// `DELETE …/session[?idempotency_key=]`: queue a reset behind the conversation's earlier
/// runs, wait for it and answer `{"deleted": n}` (0 when there was nothing to delete). The
/// same key again waits for the same reset. Past the API's reset timeout the answer is `503`
/// (the reset still runs).
pub(crate) async fn reset<C: Caller>(
    State(api): State<Api>,
    caller: C,
    path: ConversationPath,
    params: ResetParams,
) -> Result<Json<Value>, ApiError> {
    let key = path.key(caller.org())?;
    let run = api
        .runtime
        .reset_with_key(key, params.idempotency_key)
        .await?
        .run;
    let waited = tokio::time::timeout(api.reset_timeout, api.runtime.wait(caller.org(), &run));
    let record = tokio::select! {
        record = waited => match record {
            Ok(record) => record?,
            Err(_) => {
                return Err(ApiError::unavailable(format!(
                    "reset run {run} did not end within {:?}; it is queued and will still \
                     run (send the same request with the same idempotency_key to wait for it)",
                    api.reset_timeout
                )));
            }
        },
        () = api.closing.cancelled() => {
            return Err(ApiError::unavailable(format!(
                "the server is shutting down; reset run {run} is queued and will still run"
            )));
        }
    };
    let deleted = record
        .output
        .as_ref()
        .and_then(|output| output.get("deleted"))
        .and_then(Value::as_u64);
    match (record.status, deleted) {
        (lobu_core::RunStatus::Completed, Some(deleted)) => Ok(Json(json!({ "deleted": deleted }))),
        // A final answer, not a passing one: asking again with the same idempotency key
        // gives the same run, so a retry needs a new reset (409, not 503).
        (status, _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "reset run {run} ended {}: {}; send a new reset to try again",
                status.as_str(),
                record.error.unwrap_or_default()
            ),
        )),
    }
}
