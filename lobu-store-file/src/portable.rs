//! Moving conversations between stores: the store-wide `scan`, `export` and `import`.
//!
//! An import is a first completed write of the conversation, made by the same code as
//! `persist`'s (see [`persist::commit_completed`]): the transcript appended at offset 0 and
//! its history line, both synced, then `state.json` commits the head, its write time and the
//! version counter together. Before that commit the conversation has no head and the next
//! writer cuts the uncommitted bytes off; after it, the whole head is there. So a crash at
//! any point leaves no head or the whole one, and importing again finishes the job
//! (`Written`) or finds it done (`Unchanged`).
//!
//! Syncs per import that writes, with syncing on: 5 (the transcript file and `history.jsonl` 1
//! each, the directory 1 because the head-less conversation has neither file, `state.json` 2:
//! its staging file and the directory); 4 when a crashed write left both files behind.
//! A conversation never seen adds 1 per directory created (its own, and its agent's and
//! org's when they are new; more levels for long ids). `Unchanged` and refusals sync nothing.

use std::path::PathBuf;

use lobu_core::export::{ExistingHead, Exported, ImportPlan, Imported, plan_import};
use lobu_core::transcript::hash::{self, Digest};
use lobu_core::{
    AgentId, ConversationKey, Error, ErrorKind, OrgId, Page, Result, ScanPosition, TerminalStatus,
    Version, scan_cursor,
};

use crate::atomic::{list_names, read_prefix};
use crate::error::io_at;
use crate::layout;
use crate::persist::{self, Written};
use crate::records::{Digests, Record};
use crate::state::{Conversation, Head, STATE, State};
use crate::store::Inner;

/// The conversations with a head after `after`, in (org, agent, conversation) id order.
/// Directory names are encodings, which sort differently from the ids (`a%3A` before
/// `a0`, but `:` after `0`): every level is sorted by its decoded ids. Orgs and agents
/// before the cursor's are skipped without being listed, and a state record is read only
/// for the conversations the page may hold.
pub(crate) fn scan(
    inner: &Inner,
    after: Option<&ScanPosition>,
    limit: usize,
) -> Result<Page<ConversationKey>> {
    let orgs_dir = inner.layout.orgs();
    let leaves = layout::leaves(&orgs_dir).map_err(io_at("list", &orgs_dir))?;
    let mut orgs: Vec<(OrgId, PathBuf)> = leaves
        .into_iter()
        .filter_map(|(text, path)| Some((OrgId::new(text).ok()?, path)))
        .filter(|(org, _)| after.is_none_or(|a| org.as_str() >= a.org.as_str()))
        .collect();
    orgs.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut items = Vec::new();
    'orgs: for (org, org_dir) in orgs {
        // Agent ids are `[A-Za-z0-9_-]`, at most 64 bytes: one level, spelled as they are.
        let mut agents: Vec<(AgentId, PathBuf)> = list_names(&org_dir)?
            .into_iter()
            .filter_map(|(name, path)| Some((AgentId::new(layout::decode(&name)?).ok()?, path)))
            .filter(|(agent, _)| {
                after.is_none_or(|a| {
                    (org.as_str(), agent.as_str()) >= (a.org.as_str(), a.agent.as_str())
                })
            })
            .collect();
        agents.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (agent, agent_dir) in agents {
            let mut found = layout::conversations(&agent_dir).map_err(io_at("list", &agent_dir))?;
            found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            for (id, dir) in found {
                let key = ConversationKey::new(org.clone(), agent.clone(), id);
                if after.is_some_and(|a| !a.is_before(&key)) {
                    continue;
                }
                if has_head(inner, &key, dir)? {
                    items.push(key);
                    if items.len() > limit {
                        break 'orgs;
                    }
                }
            }
        }
    }
    let next_cursor = (items.len() > limit).then(|| scan_cursor(&items[limit - 1]));
    items.truncate(limit);
    Ok(Page { items, next_cursor })
}

/// Whether the conversation at `dir` has a head. One whose state record does not decode
/// counts as having one: a store-wide copy must not leave it behind unnoticed, and its
/// `export` then fails `Corrupt`, naming it (`list`, which serves a tenant, skips it).
fn has_head(inner: &Inner, key: &ConversationKey, dir: PathBuf) -> Result<bool> {
    // The state record is replaced atomically: one read sees one whole commit.
    match Conversation::at(inner, key, dir).load() {
        Ok(state) => Ok(state.is_some_and(|s| s.head.is_some())),
        Err(e) if e.kind() == ErrorKind::Corrupt => {
            tracing::warn!(conversation = %key, error = %e, "scanned with a damaged state record");
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn export(inner: &Inner, key: &ConversationKey) -> Result<Option<Exported>> {
    let head = crate::sessions::committed_head(inner, key)?;
    Ok(head.map(|(head, bytes)| {
        let version = Version(head.version);
        Exported::new(key.clone(), version, head.run, head.written_at, bytes)
    }))
}

/// Import `incoming` as [`plan_import`] decides, under the conversation's exclusive lock
/// (the one `persist` takes). Syncs: see the module docs.
pub(crate) fn import(inner: &Inner, incoming: &Exported) -> Result<Imported> {
    let key = &incoming.key;
    let max_bytes = inner.max_transcript_bytes;
    let conversation = Conversation::new(inner, key);
    if !conversation.exists() {
        // Bad input changes nothing: refused before the directory is created. Decided
        // again below, under the lock, on what is there by then.
        plan_import(incoming, None, None, max_bytes)?;
        conversation.create()?;
    }
    let _lock = conversation.lock()?;
    let loaded = conversation.load()?;
    // The state record keeps the version counter through clear and prune; only an erasure
    // removes it, and with it every trace of the versions issued.
    let last_issued = loaded.as_ref().map(|s| Version(s.last_version));
    let mut state = loaded.unwrap_or_else(|| State::fresh(key));
    let existing = match &state.head {
        Some(head) => Some(existing_head(&conversation, head)?),
        None => None,
    };
    let version = match plan_import(incoming, existing.as_ref(), last_issued, max_bytes)? {
        ImportPlan::Unchanged(version) => return Ok(Imported::Unchanged(version)),
        ImportPlan::WriteAt(version) => version.0,
        ImportPlan::WriteFresh => persist::next_version(&state, key)?,
        // A plan added to lobu-core after this store: refused before anything is written.
        other => {
            return Err(Error::new(
                ErrorKind::Other,
                format!("{key}: this version of lobu-store-file cannot carry out {other:?}"),
            ));
        }
    };
    // Whatever a crashed write (an import or a persist) left uncommitted goes first.
    conversation.recover(&mut state)?;
    let digests = Digests::of(&incoming.transcript, None);
    let record = Record {
        version,
        run: incoming.run.clone(),
        status: TerminalStatus::Completed,
        bytes: incoming.transcript.len() as u64,
        sha256: digests.whole,
        // Already cut to the microsecond; kept exactly, so `export` gives it back.
        written_at: incoming.updated_at,
    };
    let written = Written {
        body: &incoming.transcript,
        title: lobu_core::transcript::title(&incoming.transcript),
        state: digests.state,
    };
    // No head, so an append at offset 0; the commit sets the version counter to `version`,
    // which `plan_import` put above every version issued here.
    let committed = persist::commit_completed(&conversation, &mut state, record, written, true)?;
    Ok(Imported::Written(committed))
}

/// The head as [`plan_import`] compares it, with the SHA-256 its commit record keeps; only a
/// digest that does not decode is computed again from the committed transcript.
fn existing_head(conversation: &Conversation<'_>, head: &Head) -> Result<ExistingHead> {
    let stored = hex::decode(&head.sha256)
        .ok()
        .and_then(|bytes| Digest::try_from(bytes).ok());
    let digest = match stored {
        Some(digest) => digest,
        None => {
            tracing::warn!(conversation = %conversation.key, state = %conversation.path(STATE).display(),
                "the head's SHA-256 does not decode; hashing the transcript instead");
            let bytes = read_prefix(&conversation.transcript_path(head), head.bytes)?;
            hash::digest(&bytes)
        }
    };
    Ok(ExistingHead {
        version: Version(head.version),
        run: head.run.clone(),
        digest,
    })
}
