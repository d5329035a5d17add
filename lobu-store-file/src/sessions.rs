//! [`SessionStore`] for [`FileStore`]: hydrate, head and list here; persist, clear, prune_with,
//! erase, and scan, export and import in their own modules.

use async_trait::async_trait;
use bytes::Bytes;
use lobu_core::export::{Exported, Imported};
use lobu_core::retention::IdlePrune;
use lobu_core::{
    AgentId, ConversationKey, ConversationSummary, EraseScope, ErasureReport, Fence, OrgId, Page,
    Persist, PruneReport, Result, SessionStore, Snapshot, Version, check_page_limit,
    parse_scan_cursor,
};

use crate::atomic::{read_committed, read_prefix};
use crate::layout;
use crate::state::{Conversation, Head};
use crate::store::{FileStore, Inner};
use crate::{persist, portable, retention};

/// How many times a reader reads the state again after the file it named was replaced
/// (by a rewrite or a reset) before it waits for the lock instead.
const READS_WITHOUT_LOCK: usize = 3;

/// The committed head and its bytes (what `hydrate` and `export` read). Without a lock:
/// the state record is read (2 opens and 3 reads in all, see [`crate::state`]); a head of
/// format 1, or one a restart may have left unwritten ([`crate::carry`]), is read under the
/// lock instead.
pub(crate) fn committed_head(
    inner: &Inner,
    key: &ConversationKey,
) -> Result<Option<(Head, Vec<u8>)>> {
    let conversation = Conversation::new(inner, key);
    for _ in 0..READS_WITHOUT_LOCK {
        let Some(state) = conversation.load()? else {
            return Ok(None);
        };
        if conversation.needs_repair(&state) {
            break;
        }
        let Some(head) = state.head else {
            return Ok(None);
        };
        let Some(file) = &head.file else {
            break;
        };
        match read_committed(&conversation.path(file), head.bytes)? {
            Some(bytes) => return Ok(Some((head, bytes))),
            None => continue, // replaced since the state was read
        }
    }
    locked_head(&conversation)
}

/// [`committed_head`] under the shared lock, which no writer holds while it changes the
/// state record and the transcript.
fn locked_head(conversation: &Conversation<'_>) -> Result<Option<(Head, Vec<u8>)>> {
    if !conversation.exists() {
        return Ok(None);
    }
    let Some((_lock, state)) = conversation.load_intact()? else {
        return Ok(None);
    };
    let Some(head) = state.head else {
        return Ok(None);
    };
    let bytes = read_prefix(&conversation.transcript_path(&head), head.bytes)?;
    Ok(Some((head, bytes)))
}

fn hydrate(inner: &Inner, key: &ConversationKey) -> Result<Option<Snapshot>> {
    let head = committed_head(inner, key)?;
    Ok(head.map(|(head, bytes)| Snapshot {
        version: Version(head.version),
        run: head.run,
        transcript: Bytes::from(bytes),
    }))
}

fn head(inner: &Inner, key: &ConversationKey) -> Result<Option<Version>> {
    let conversation = Conversation::new(inner, key);
    if !conversation.exists() {
        return Ok(None);
    }
    // The state record is replaced atomically: one read sees one whole commit.
    let state = conversation.load()?;
    Ok(state.and_then(|s| s.head).map(|h| Version(h.version)))
}

fn list(
    inner: &Inner,
    org: &OrgId,
    agent: &AgentId,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<ConversationSummary>> {
    let dir = inner.layout.agent_dir(org, agent);
    let mut found = layout::conversations(&dir).map_err(crate::error::io_at("list", &dir))?;
    found.retain(|(id, _)| cursor.is_none_or(|c| id.as_str() > c));
    found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut items = Vec::new();
    for (id, path) in found {
        let key = ConversationKey::new(org.clone(), agent.clone(), id);
        let conversation = Conversation::at(inner, &key, path);
        let state = match conversation.load() {
            Ok(state) => state,
            // One damaged conversation must not hide the others from the listing.
            Err(e) => {
                tracing::warn!(conversation = %key, error = %e, "skipped in listing");
                continue;
            }
        };
        let Some(head) = state.and_then(|s| s.head) else {
            continue;
        };
        items.push(ConversationSummary {
            conversation: key.conversation,
            version: Version(head.version),
            turns: head.turns,
            bytes: head.bytes,
            title: head.title,
            updated_at: head.written_at,
        });
        if items.len() > limit {
            break;
        }
    }
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|s| s.conversation.as_str().to_owned())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

#[async_trait]
impl SessionStore for FileStore {
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        let key = key.clone();
        self.blocking(move |inner| hydrate(inner, &key)).await
    }

    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>> {
        let key = key.clone();
        self.blocking(move |inner| head(inner, &key)).await
    }

    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version> {
        let key = key.clone();
        self.blocking(move |inner| persist::persist(inner, &key, write))
            .await
    }

    async fn clear(&self, key: &ConversationKey, fence: Fence) -> Result<u64> {
        let key = key.clone();
        self.blocking(move |inner| retention::clear(inner, &key, fence))
            .await
    }

    async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>> {
        check_page_limit(limit)?;
        let (org, agent) = (org.clone(), agent.clone());
        let cursor = cursor.map(str::to_owned);
        self.blocking(move |inner| list(inner, &org, &agent, cursor.as_deref(), limit))
            .await
    }

    async fn prune_with(&self, prune: &IdlePrune) -> Result<PruneReport> {
        prune.validate()?;
        let prune = prune.clone();
        self.blocking(move |inner| retention::prune(inner, &prune))
            .await
    }

    async fn erase(&self, scope: &EraseScope) -> Result<ErasureReport> {
        let scope = scope.clone();
        let report = self
            .blocking(move |inner| crate::erase::erase(inner, &scope))
            .await?;
        // Followers of an erased run see it gone; a lane may have lost its front.
        self.inner.work.notify_waiters();
        Ok(report)
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<ConversationKey>> {
        check_page_limit(limit)?;
        let after = cursor.map(parse_scan_cursor).transpose()?;
        self.blocking(move |inner| portable::scan(inner, after.as_ref(), limit))
            .await
    }

    async fn export(&self, key: &ConversationKey) -> Result<Option<Exported>> {
        let key = key.clone();
        self.blocking(move |inner| portable::export(inner, &key))
            .await
    }

    async fn import(&self, conversation: &Exported) -> Result<Imported> {
        // The transcript is shared, not copied.
        let conversation = conversation.clone();
        self.blocking(move |inner| portable::import(inner, &conversation))
            .await
    }

    fn max_transcript_bytes(&self) -> usize {
        self.inner.max_transcript_bytes
    }
}
