//! The stored-transcript check: each conversation's head, read with the store's own
//! `hydrate` (read-only; the replicas are stopped by then), parses with lobu-core's
//! transcript reader with no torn or malformed line, starts with its session header, and
//! shows exactly the messages the HTTP API showed.

use std::sync::Arc;

use lobu_core::transcript::{DisplayMessage, parse};
use lobu_core::{ConversationKey, SessionStore};

use crate::findings::Findings;

/// Open the store the replicas shared, for reading.
pub(crate) async fn open_store(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn SessionStore>, String> {
    match database_url {
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .map_err(|e| format!("connecting to read transcripts: {e}"))?;
            Ok(lobu_store_pg::PgStore::new(pool).into_backend().sessions)
        }
        None => {
            let store = lobu_store_file::FileStore::open(data_dir)
                .await
                .map_err(|e| format!("opening the file store to read transcripts: {e}"))?;
            Ok(store.into_backend().sessions)
        }
    }
}

/// Check the stored head of `key` against `shown`, the messages the API returned.
pub(crate) async fn check_stored(
    store: &dyn SessionStore,
    key: &ConversationKey,
    shown: &[DisplayMessage],
) -> Findings {
    let mut findings = Findings::default();
    let name = format!("{}/{}", key.org.as_str(), key.conversation.as_str());
    let snapshot = match store.hydrate(key).await {
        Ok(snapshot) => snapshot,
        Err(error) => {
            findings
                .corrupt
                .push(format!("{name}: hydrate failed: {error}"));
            return findings;
        }
    };
    let stored: Vec<DisplayMessage> = match &snapshot {
        None => Vec::new(),
        Some(snapshot) => {
            let transcript = parse(&snapshot.transcript);
            if transcript.skipped_lines() > 0 {
                findings.corrupt.push(format!(
                    "{name}: {} torn or malformed lines in the head (version {}): {:?}",
                    transcript.skipped_lines(),
                    snapshot.version,
                    transcript.skipped()
                ));
            }
            let first_line = snapshot.transcript.split(|b| *b == b'\n').next();
            let header =
                first_line.and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok());
            if header.as_ref().and_then(|h| h["type"].as_str()) != Some("session")
                || transcript.session_id().is_none()
            {
                findings.corrupt.push(format!(
                    "{name}: the head (version {}) does not start with a session header",
                    snapshot.version
                ));
            }
            transcript.messages().collect()
        }
    };
    if stored != shown {
        findings.corrupt.push(format!(
            "{name}: the stored head holds {} messages, the API showed {} different ones",
            stored.len(),
            shown.len()
        ));
    }
    findings
}
