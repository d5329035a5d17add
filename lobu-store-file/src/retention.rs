//! `clear` and `prune_with`: forgetting conversations, with the counters kept.
//!
//! Both commit first (the state record drops the head and marks every forensic record up to
//! the newest version as cleared), then remove the files. A crash in between leaves files
//! that nothing reads any more: the next writer cuts the transcript and history back to
//! nothing, and cleared forensic records are neither counted nor matched. Versions, fences
//! and the lease stay in the state record, so none is ever handed out twice.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::time::SystemTime;

use lobu_core::retention::IdlePrune;
use lobu_core::{AgentId, ConversationKey, Fence, OrgId, PruneReport, Result};

use crate::atomic::{is_staging, list_names, remove_file};
use crate::error::io_at;
use crate::layout;
use crate::persist;
use crate::records;
use crate::state::{Conversation, FORENSIC, HISTORY, State, is_transcript};
use crate::store::{Inner, Step};

/// Fenced like a write: `fence` must be the conversation's newest (a claim's or a lease's),
/// checked under the conversation's lock, else `Fenced` and nothing is removed.
pub(crate) fn clear(inner: &Inner, key: &ConversationKey, fence: Fence) -> Result<u64> {
    let conversation = Conversation::new(inner, key);
    if !conversation.exists() {
        return Err(persist::never_leased(key));
    }
    let _lock = conversation.lock()?;
    let Some(mut state) = conversation.load()? else {
        return Err(persist::never_leased(key));
    };
    persist::check_fence(&state, fence, key)?;
    wipe(&conversation, &mut state)
}

/// Remove every snapshot of a locked conversation; returns how many there were.
pub(crate) fn wipe(conversation: &Conversation<'_>, state: &mut State) -> Result<u64> {
    let removed = snapshots(conversation, state)?;
    if removed > 0 {
        state.head = None;
        state.cleared_through = state.last_version;
        // Replaced whole: what earlier lines carried must never be written back over the
        // files removed below.
        conversation.replace(state)?;
        conversation.inner.reached(Step::Cleared)?;
    }
    for (name, path) in list_names(&conversation.dir)? {
        let leftover = name == HISTORY || is_staging(&name) || is_transcript(&name);
        if leftover {
            remove_file(&path)?;
        }
    }
    let forensic_dir = conversation.path(FORENSIC);
    match fs::remove_dir_all(&forensic_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_at("remove", &forensic_dir)(e).into());
        }
        _ => {}
    }
    conversation.inner.disk.sync_dir(&conversation.dir)?;
    Ok(removed)
}

/// How many snapshots a conversation holds: its completed turns and live forensic copies.
fn snapshots(conversation: &Conversation<'_>, state: &State) -> Result<u64> {
    let forensic = records::forensic(conversation, state)?.len() as u64;
    Ok(forensic + state.head.as_ref().map_or(0, |h| h.turns))
}

/// What one `prune_with` call has done so far, and may still do.
struct Pass<'a> {
    prune: &'a IdlePrune,
    report: PruneReport,
    conversations_left: usize,
    forensic_left: usize,
}

/// Walk every conversation of the agents `prune` covers, each under its lock, until both
/// limits are used up. Syncs: per conversation removed whole, as `clear` (the state record's
/// 2 and its directory's 1); none per forensic copy (its removal may come back after a power
/// loss, and the next prune removes it again).
pub(crate) fn prune(inner: &Inner, prune: &IdlePrune) -> Result<PruneReport> {
    let mut pass = Pass {
        prune,
        report: PruneReport::default(),
        conversations_left: prune.limit,
        forensic_left: prune.limit,
    };
    let orgs = inner.layout.orgs();
    for (org, org_dir) in layout::leaves(&orgs).map_err(io_at("list", &orgs))? {
        let Ok(org) = OrgId::new(&org) else {
            continue;
        };
        for (name, agent_dir) in list_names(&org_dir)? {
            let Some(agent) = layout::decode(&name).and_then(|a| AgentId::new(a).ok()) else {
                continue;
            };
            // Both of the prune's rules take only the agents it covers: skip the others'
            // conversations without locking each.
            if !prune.agents.covers(&agent) {
                continue;
            }
            let conversations =
                layout::conversations(&agent_dir).map_err(io_at("list", &agent_dir))?;
            for (id, dir) in conversations {
                if pass.conversations_left == 0 && pass.forensic_left == 0 {
                    return Ok(pass.report);
                }
                let key = ConversationKey::new(org.clone(), agent.clone(), id);
                let conversation = Conversation::at(inner, &key, dir);
                // One damaged conversation must not stop retention for all the others.
                if let Err(e) = prune_one(&conversation, &mut pass) {
                    tracing::warn!(conversation = %key, error = %e, "skipped by prune");
                }
            }
        }
    }
    Ok(pass.report)
}

fn prune_one(conversation: &Conversation<'_>, pass: &mut Pass<'_>) -> Result<()> {
    if !conversation.exists() {
        return Ok(());
    }
    let prune = pass.prune;
    // A dry run only reads: the shared lock keeps writers from changing what it counts.
    let _lock = if prune.dry_run {
        conversation.lock_shared()?
    } else {
        conversation.lock()?
    };
    let Some(mut state) = conversation.load()? else {
        return Ok(());
    };
    let agent = &conversation.key.agent;
    // A conversation with a live owner (a claimed run or a lease) is never removed whole:
    // its owner is working on it.
    let owned = state
        .lease
        .as_ref()
        .is_some_and(|l| l.expires_at > SystemTime::now());
    let idle = state
        .head
        .as_ref()
        .is_some_and(|h| prune.takes_conversation(agent, h.written_at));
    if idle && !owned && pass.conversations_left > 0 {
        pass.report.snapshots += if prune.dry_run {
            snapshots(conversation, &state)?
        } else {
            wipe(conversation, &mut state)?
        };
        pass.report.conversations += 1;
        pass.conversations_left -= 1;
        return Ok(());
    }
    let mut kept = BTreeSet::new();
    for forensic in records::forensic(conversation, &state)? {
        let record = &forensic.record;
        let old = prune.takes_forensic(agent, record.status, record.written_at);
        if !(old && pass.forensic_left > 0) {
            kept.insert(record.version);
            continue;
        }
        if !prune.dry_run {
            // The record first: without it the transcript copy is ignored leftover.
            remove_file(&forensic.record_path)?;
            remove_file(&forensic.transcript_path)?;
        }
        pass.report.snapshots += 1;
        pass.forensic_left -= 1;
    }
    if prune.dry_run {
        return Ok(());
    }
    sweep_forensic(conversation, &kept)
}

/// Remove forensic files of no live record (crashed writes, cleared records).
fn sweep_forensic(conversation: &Conversation<'_>, kept: &BTreeSet<u64>) -> Result<()> {
    for (name, path) in list_names(&conversation.path(FORENSIC))? {
        let version = name.split('.').next().and_then(|v| v.parse::<u64>().ok());
        if is_staging(&name) || version.is_some_and(|v| !kept.contains(&v)) {
            remove_file(&path)?;
        }
    }
    Ok(())
}
