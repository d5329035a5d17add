//! Path and query parameters, validated into lobu's types; every mistake is a 400 naming it.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use lobu_core::{AgentId, ConversationKey, IdempotencyKey, MAX_PAGE_LIMIT, OrgId, RunId};
use serde::Deserialize;

use crate::error::ApiError;

/// The longest message text, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The longest cursor, in bytes (a cursor is a message id or a conversation id).
const MAX_CURSOR_BYTES: usize = 512;

/// `{agent}` and `{conversation}` of a conversation route, percent-decoded.
#[derive(Debug)]
pub(crate) struct ConversationPath {
    agent: String,
    conversation: String,
}

impl ConversationPath {
    /// The conversation's key in the caller's org (the org never comes from the path).
    pub(crate) fn key(&self, org: &OrgId) -> Result<ConversationKey, ApiError> {
        let agent = AgentId::new(&self.agent).map_err(|e| ApiError::bad_request(e.message()))?;
        let conversation = lobu_core::ConversationId::new(&self.conversation)
            .map_err(|e| ApiError::bad_request(e.message()))?;
        Ok(ConversationKey::new(org.clone(), agent, conversation))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ConversationPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((agent, conversation)) =
            Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        Ok(ConversationPath {
            agent,
            conversation,
        })
    }
}

/// `{agent}` of the conversation listing.
#[derive(Debug)]
pub(crate) struct AgentPath(pub(crate) AgentId);

impl<S: Send + Sync> FromRequestParts<S> for AgentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(agent) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        AgentId::new(agent)
            .map(AgentPath)
            .map_err(|e| ApiError::bad_request(e.message()))
    }
}

/// `{run_id}` of the run routes.
#[derive(Debug)]
pub(crate) struct RunPath(pub(crate) RunId);

impl<S: Send + Sync> FromRequestParts<S> for RunPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(run) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("bad path: {}", e.body_text())))?;
        RunId::new(run)
            .map(RunPath)
            .map_err(|e| ApiError::bad_request(e.message()))
    }
}

#[derive(Debug, Deserialize)]
struct RawPage {
    cursor: Option<String>,
    limit: Option<String>,
}

/// `?cursor=&limit=` of the paged routes. Empty values count as absent; unknown parameters
/// are ignored.
#[derive(Debug)]
pub(crate) struct PageParams {
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<usize>,
}

impl<S: Send + Sync> FromRequestParts<S> for PageParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        check_query_utf8(parts.uri.query().unwrap_or_default())?;
        let Query(raw) = Query::<RawPage>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
        parse_page(raw)
    }
}

/// `?idempotency_key=` of `DELETE …/session`: a reset sent again with the same key answers
/// with the first reset's run instead of queueing another (which, arriving late, would clear
/// the turns sent in between). An empty value counts as absent; a bad key is a 400.
#[derive(Debug)]
pub(crate) struct ResetParams {
    pub(crate) idempotency_key: Option<IdempotencyKey>,
}

#[derive(Deserialize)]
struct RawReset {
    idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ResetParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        check_query_utf8(parts.uri.query().unwrap_or_default())?;
        let Query(raw) = Query::<RawReset>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
        let idempotency_key = raw
            .idempotency_key
            .filter(|k| !k.is_empty())
            .map(|k| {
                IdempotencyKey::new(k).map_err(|e| ApiError::bad_request(e.message().to_owned()))
            })
            .transpose()?;
        Ok(ResetParams { idempotency_key })
    }
}

/// `400` if a query value percent-decodes to bytes that are not UTF-8. The query parser
/// would replace them with U+FFFD, so different cursors (`%FF`, `%FE`) would silently become
/// one; a path with such bytes is refused the same way.
fn check_query_utf8(query: &str) -> Result<(), ApiError> {
    for pair in query.split('&') {
        let mut decoded = Vec::with_capacity(pair.len());
        let mut bytes = pair.bytes();
        while let Some(b) = bytes.next() {
            let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
            if b == b'%' {
                let mut ahead = bytes.clone();
                if let (Some(hi), Some(lo)) = (hex(ahead.next()), hex(ahead.next())) {
                    decoded.push((hi * 16 + lo) as u8);
                    bytes = ahead;
                    continue;
                }
            }
            decoded.push(b);
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(ApiError::bad_request(
                "bad query: a parameter is not UTF-8 once percent-decoded",
            ));
        }
    }
    Ok(())
}

fn parse_page(raw: RawPage) -> Result<PageParams, ApiError> {
    let limit = match raw.limit.as_deref().filter(|l| !l.is_empty()) {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => Some(limit),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE_LIMIT}, got {text:?}"
                )));
            }
        },
    };
    let cursor = raw.cursor.filter(|c| !c.is_empty());
    if let Some(cursor) = &cursor {
        if cursor.len() > MAX_CURSOR_BYTES {
            return Err(ApiError::bad_request(format!(
                "cursor is {} bytes; the limit is {MAX_CURSOR_BYTES}",
                cursor.len()
            )));
        }
        if cursor.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "cursor must not contain control characters",
            ));
        }
    }
    Ok(PageParams { cursor, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<&str>, limit: Option<&str>) -> Result<PageParams, ApiError> {
        parse_page(RawPage {
            cursor: cursor.map(str::to_owned),
            limit: limit.map(str::to_owned),
        })
    }

    #[test]
    fn limits_outside_1_to_200_are_named_400s() {
        for bad in ["0", "201", "-1", "ten", "1.5", " 5"] {
            let error = page(None, Some(bad)).unwrap_err();
            assert_eq!(error.status(), 400);
            assert!(
                error.message().starts_with("limit must be"),
                "{}",
                error.message()
            );
        }
        assert_eq!(page(None, Some("200")).unwrap().limit, Some(200));
        assert_eq!(page(None, Some("")).unwrap().limit, None);
    }

    #[test]
    fn query_values_must_decode_to_utf8() {
        for ok in [
            "",
            "cursor=abc&limit=5",
            "cursor=%C3%BC",
            "cursor=%",
            "cursor=%4",
            "a=%zz",
        ] {
            assert!(check_query_utf8(ok).is_ok(), "{ok}");
        }
        for bad in [
            "cursor=%FF",
            "limit=1&cursor=a%C3",
            "%80=x",
            "cursor=%ed%a0%80",
        ] {
            let error = check_query_utf8(bad).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}");
            assert!(error.message().contains("not UTF-8"), "{}", error.message());
        }
    }

    #[test]
    fn cursors_are_bounded_and_printable() {
        assert!(page(Some(&"c".repeat(513)), None).is_err());
        assert!(page(Some("a\u{0}b"), None).is_err());
        assert_eq!(page(Some(""), None).unwrap().cursor, None);
        assert_eq!(
            page(Some("a1b2c3d4"), None).unwrap().cursor.as_deref(),
            Some("a1b2c3d4")
        );
    }
}
