//! Erasure: `DELETE /v1/agents/{agent}/conversations/{conversation}` (one conversation),
//! `DELETE /v1/agents/{agent}/conversations` (all of one agent's) and `DELETE /v1/data`
//! (everything of the caller's org). Each answers `200 {"conversations", "snapshots",
//! "runs", "events"}`: what was removed (zeros when there was nothing). The org is always the
//! caller's, so a key can erase only its own org's data.

use axum::Json;
use axum::extract::State;
use lobu_core::{EraseScope, ErasureReport};

use crate::api::Api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{AgentPath, ConversationPath};

/// `DELETE /v1/agents/{agent}/conversations/{conversation}`.
pub(crate) async fn conversation<C: Caller>(
    State(api): State<Api>,
    caller: C,
    path: ConversationPath,
) -> Result<Json<ErasureReport>, ApiError> {
    let key = path.key(caller.org())?;
    Ok(Json(
        api.runtime.erase(&EraseScope::Conversation(key)).await?,
    ))
}

/// `DELETE /v1/agents/{agent}/conversations`.
pub(crate) async fn agent<C: Caller>(
    State(api): State<Api>,
    caller: C,
    AgentPath(agent): AgentPath,
) -> Result<Json<ErasureReport>, ApiError> {
    let scope = EraseScope::Agent(caller.org().clone(), agent);
    Ok(Json(api.runtime.erase(&scope).await?))
}

/// `DELETE /v1/data`.
pub(crate) async fn org<C: Caller>(
    State(api): State<Api>,
    caller: C,
) -> Result<Json<ErasureReport>, ApiError> {
    Ok(Json(
        api.runtime
            .erase(&EraseScope::Org(caller.org().clone()))
            .await?,
    ))
}
