//! `GET /v1/agents/{agent}/conversations?cursor=&limit=`: the caller's org's conversations.

use axum::Json;
use axum::extract::State;
use lobu_core::ConversationSummary;
use lobu_core::transcript::DEFAULT_MESSAGE_LIMIT;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::Api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{AgentPath, PageParams};

/// One page of conversations, ordered by conversation id.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConversationList {
    conversations: Vec<ConversationItem>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    has_more: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConversationItem {
    conversation_id: String,
    title: Option<String>,
    /// Completed turns (snapshots) since the conversation began or was last reset.
    turns: u64,
    bytes: u64,
    /// RFC 3339, UTC.
    updated_at: String,
}

impl From<ConversationSummary> for ConversationItem {
    fn from(summary: ConversationSummary) -> Self {
        let updated_at = OffsetDateTime::from(summary.updated_at)
            .format(&Rfc3339)
            .unwrap_or_default();
        ConversationItem {
            conversation_id: summary.conversation.to_string(),
            title: summary.title,
            turns: summary.turns,
            bytes: summary.bytes,
            updated_at,
        }
    }
}

/// The org's conversations of one agent that have a transcript (default 50 per page).
pub(crate) async fn list<C: Caller>(
    State(api): State<Api>,
    caller: C,
    AgentPath(agent): AgentPath,
    page: PageParams,
) -> Result<Json<ConversationList>, ApiError> {
    let limit = page.limit.unwrap_or(DEFAULT_MESSAGE_LIMIT);
    let listed = api
        .runtime
        .list(caller.org(), &agent, page.cursor.as_deref(), limit)
        .await?;
    Ok(Json(ConversationList {
        has_more: listed.next_cursor.is_some(),
        next_cursor: listed.next_cursor,
        conversations: listed
            .items
            .into_iter()
            .map(ConversationItem::from)
            .collect(),
    }))
}
