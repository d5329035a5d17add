//! Who a request acts for. The org comes only from the caller's credentials, never from the
//! path or the body, so one org can never name another org's conversation.
//!
//! The routes are generic over an extractor implementing [`Caller`]: a host plugs in its own
//! authentication (sessions, JWTs, mTLS). [`KeyCaller`] is the ready-made one: bearer keys
//! from an [`ApiKeys`] table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use lobu_core::OrgId;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// An extractor that authenticates a request and yields the org it acts for. The routes
/// extract it before anything else, so an unauthenticated request is refused (with the
/// extractor's rejection, `401` for [`KeyCaller`]) before its path or body is looked at.
///
/// On the event-stream route (`GET /v1/runs/{id}/events`) the request carries an
/// [`EventStreamRoute`] extension: a browser's `EventSource` cannot send headers, so an
/// extractor may accept a credential from the query there, and only there.
pub trait Caller {
    /// The org the request acts for.
    fn org(&self) -> &OrgId;
}

/// Marks a request to the event-stream route (see [`Caller`]).
#[derive(Debug, Clone, Copy)]
pub struct EventStreamRoute;

/// The org of every request when no keys are configured.
pub const OPEN_ORG: &str = "default";

/// Which keys the server accepts and the org each one stands for.
#[derive(Clone)]
pub enum ApiKeys {
    /// No keys configured: every request is org [`OPEN_ORG`].
    Open,
    /// Only these keys are accepted (pairs of key and org).
    Keys(Vec<(String, OrgId)>),
}

impl fmt::Debug for ApiKeys {
    // Keys are secrets: show how many there are and for which orgs, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKeys::Open => f.write_str("ApiKeys::Open"),
            ApiKeys::Keys(keys) => f
                .debug_struct("ApiKeys")
                .field("count", &keys.len())
                .field(
                    "orgs",
                    &keys.iter().map(|(_, o)| o.as_str()).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

impl ApiKeys {
    /// Parse `key1=org1,key2=org2` strictly. Whitespace around entries is ignored; an empty
    /// entry, an entry without `=`, an empty key, a key with spaces or control characters, a
    /// bad org id or a key given twice is an error naming the entry by position (never by
    /// its key, which is a secret). A key may contain `=` (base64 padding): the org is what
    /// follows the last `=`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, OrgId)> = Vec::new();
        if spec.trim().is_empty() {
            return Err("the key list is empty; use ApiKeys::Open to run without keys".to_owned());
        }
        for (index, entry) in spec.split(',').enumerate() {
            let n = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("entry {n} is empty"));
            }
            let Some((key, org)) = entry.rsplit_once('=') else {
                return Err(format!("entry {n} is not of the form key=org"));
            };
            if key.is_empty() {
                return Err(format!("entry {n} has an empty key"));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "entry {n}: keys must be printable ASCII without spaces"
                ));
            }
            let org = OrgId::new(org).map_err(|e| format!("entry {n}: {}", e.message()))?;
            if keys.iter().any(|(known, _)| known == key) {
                return Err(format!("entry {n} repeats the key of an earlier entry"));
            }
            keys.push((key.to_owned(), org));
        }
        Ok(ApiKeys::Keys(keys))
    }

    /// Whether requests need a key.
    pub fn is_open(&self) -> bool {
        matches!(self, ApiKeys::Open)
    }

    /// The org a presented key stands for; `None` for a missing or unknown key.
    pub fn org_for(&self, presented: Option<&str>) -> Option<OrgId> {
        match self {
            ApiKeys::Open => Some(OrgId::new(OPEN_ORG).expect("`default` is a valid org id")),
            ApiKeys::Keys(keys) => {
                let presented = presented?;
                // Compare against every key in constant time per key, so response timing
                // does not reveal how much of a key was right.
                let mut found = None;
                for (key, org) in keys {
                    if constant_time_eq(key.as_bytes(), presented.as_bytes()) {
                        found = Some(org.clone());
                    }
                }
                found
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // `subtle` compares without branching on the bytes (the length is not secret).
    a.ct_eq(b).into()
}

/// The `<key>` of an `Authorization: Bearer <key>` header (scheme case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The ready-made [`Caller`]: an `Authorization: Bearer <key>` header looked up in the
/// state's [`ApiKeys`] (on the event-stream route also `?key=<key>`, for browsers). A missing
/// or unknown key is `401` with a `Bearer` challenge.
#[derive(Debug, Clone)]
pub struct KeyCaller {
    /// The org the key stands for.
    pub org: OrgId,
}

impl Caller for KeyCaller {
    fn org(&self) -> &OrgId {
        &self.org
    }
}

impl<S> FromRequestParts<S> for KeyCaller
where
    S: Send + Sync,
    Arc<ApiKeys>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let keys = Arc::<ApiKeys>::from_ref(state);
        // Only the event-stream route reads the query key, so keys stay out of other URLs
        // (and their logs) by design of the API.
        let query_key = parts
            .extensions
            .get::<EventStreamRoute>()
            .and_then(|_| Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok())
            .and_then(|Query(mut q)| q.remove("key"));
        let presented = bearer(parts).or(query_key.as_deref());
        let org = keys.org_for(presented).ok_or_else(ApiError::unauthorized)?;
        Ok(KeyCaller { org })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs(keys: &ApiKeys) -> Vec<(String, String)> {
        match keys {
            ApiKeys::Open => Vec::new(),
            ApiKeys::Keys(k) => k.iter().map(|(k, o)| (k.clone(), o.to_string())).collect(),
        }
    }

    #[test]
    fn keys_map_to_their_orgs() {
        let keys = ApiKeys::parse("alpha-key=acme, beta-key=globex").unwrap();
        assert_eq!(
            orgs(&keys),
            [
                ("alpha-key".into(), "acme".into()),
                ("beta-key".into(), "globex".into())
            ]
        );
        assert_eq!(keys.org_for(Some("beta-key")).unwrap().as_str(), "globex");
        assert!(keys.org_for(Some("beta-ke")).is_none());
        assert!(keys.org_for(Some("")).is_none());
        assert!(keys.org_for(None).is_none());
    }

    #[test]
    fn base64_padding_stays_in_the_key() {
        let keys = ApiKeys::parse("c2VjcmV0==acme").unwrap();
        assert_eq!(keys.org_for(Some("c2VjcmV0=")).unwrap().as_str(), "acme");
    }

    #[test]
    fn every_malformed_spec_is_refused_without_echoing_keys() {
        for (spec, expect) in [
            ("", "empty"),
            ("   ", "empty"),
            ("k1=acme,", "entry 2 is empty"),
            ("k1=acme,,k2=b", "entry 2 is empty"),
            ("justakey", "entry 1 is not of the form key=org"),
            ("=acme", "entry 1 has an empty key"),
            ("k1=", "entry 1: org id must not be empty"),
            ("sec ret=acme", "printable ASCII"),
            ("k1=acme,k1=globex", "entry 2 repeats"),
            ("k1=ac\u{1}me", "control characters"),
        ] {
            let error = ApiKeys::parse(spec).expect_err(spec);
            assert!(error.contains(expect), "{spec:?}: {error}");
            assert!(
                !error.contains("k1=") && !error.contains("sec ret"),
                "{error}"
            );
        }
    }

    #[test]
    fn open_mode_puts_everyone_in_the_default_org() {
        let open = ApiKeys::Open;
        assert_eq!(open.org_for(None).unwrap().as_str(), OPEN_ORG);
        assert_eq!(open.org_for(Some("anything")).unwrap().as_str(), OPEN_ORG);
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let keys = ApiKeys::parse("top-secret-1=acme").unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains("top-secret"), "{shown}");
        assert!(shown.contains("acme"), "{shown}");
    }
}
