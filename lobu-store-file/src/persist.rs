//! `SessionStore::persist`: the checks of the contract, then one of three writes.
//!
//! * A completed transcript that starts with the head's bytes (or a first one) is
//!   **appended**: only the new bytes go to the head's transcript file (a first turn starts
//!   one), past the committed length, then a history line, then the state record commits
//!   both lengths.
//! * A completed transcript that does not extend the head (a compaction rewrote history) is
//!   **written whole** to a file of a new name, synced, and the state record's commit names
//!   it; the old file is removed after (by the next writer, after a crash). Readers, which
//!   take no lock, read whichever file the state they read names.
//! * Any other status reserves its version in the state record, then writes a **forensic**
//!   copy and its record; the head does not move.
//!
//! Nothing before the state record's commit is visible, so a crash at any byte leaves the
//! last committed head readable, and the next writer cuts or removes what was left over.

use std::borrow::Cow;
use std::time::SystemTime;

use lobu_core::persist_plan::{self, Earlier, Found, Plan};
use lobu_core::transcript::hash::{TranscriptHash, digest, hex};
use lobu_core::{
    ConversationKey, Error, ErrorKind, Fence, Persist, Result, TerminalStatus, Version,
};

use crate::atomic::{read_prefix, remove_file};
use crate::carry::Carried;
use crate::records::{self, Digests, Record};
use crate::state::{Conversation, HISTORY, Head, State, transcript_name};
use crate::store::{Inner, Step};

pub(crate) fn persist(inner: &Inner, key: &ConversationKey, write: Persist) -> Result<Version> {
    check_size(inner, key, write.len())?;
    let conversation = Conversation::new(inner, key);
    if !conversation.exists() {
        return Err(never_leased(key));
    }
    let _lock = conversation.lock()?;
    let Some(mut state) = conversation.load()? else {
        return Err(never_leased(key));
    };
    persist_locked(&conversation, &mut state, write).map(|(version, _)| version)
}

/// `TooLarge` if a transcript of `size` bytes is over the store's limit (step 1).
pub(crate) fn check_size(inner: &Inner, key: &ConversationKey, size: usize) -> Result<()> {
    persist_plan::check_size(key, size, inner.max_transcript_bytes)
}

/// Steps 2 to 4 of the contract and the write, on a conversation whose exclusive lock the
/// caller holds and whose state record it loaded (`state`, updated in place). Returns the
/// version and whether `state` was saved (a retry of a stored write saves nothing). A
/// completed write commits everything else in `state` too (`complete` ends its ownership in
/// the same commit).
pub(crate) fn persist_locked(
    conversation: &Conversation<'_>,
    state: &mut State,
    write: Persist,
) -> Result<(Version, bool)> {
    let inner = conversation.inner;
    let key = conversation.key;
    check_fence(state, write.fence, key)?;
    // Invisible to readers (it drops uncommitted bytes and files, and names a format 1
    // head's file anew), and done even for a retry, so the head's file is whole again after
    // any write.
    conversation.recover(state)?;
    // An append over the whole head whose hash state is kept costs its new bytes only;
    // anything else is decided on the whole transcript it stands for.
    let hashed = hash_append(state, &write)?;
    let write = match hashed {
        Some(_) => write,
        None => whole(conversation, state, write)?,
    };
    let size = write.len();
    let head_bytes = state.head.as_ref().map(|h| h.bytes);
    let (digests, keeps_head) = match &hashed {
        Some(hasher) => (Digests::after(hasher, None), true),
        None => {
            let digests = Digests::of(&write.transcript, head_bytes);
            // The head's bytes are a prefix of the write (the digest covers exactly its length).
            let keeps = state
                .head
                .as_ref()
                .is_some_and(|head| digests.prefix.as_ref() == Some(&head.sha256));
            (digests, keeps)
        }
    };
    let extends_head = keeps_head && head_bytes.is_some_and(|b| b < size as u64);
    let earlier = earlier(conversation, state, &write, size as u64, &digests.whole)?;
    let found = Found {
        head: state.head.as_ref().map(|h| Version(h.version)),
        extends_head,
        earlier: &earlier,
    };
    if let Plan::Retry(version) =
        persist_plan::plan(key, &write.run, write.status, write.expected, &found)?
    {
        return Ok((version, false));
    }
    let record = Record {
        version: next_version(state, key)?,
        run: write.run,
        status: write.status,
        bytes: size as u64,
        sha256: digests.whole,
        written_at: SystemTime::now(),
    };
    if record.status == TerminalStatus::Completed {
        // Appending nothing is right too: a new run that left the transcript as it was.
        let append = state.head.is_none() || keeps_head;
        let previous = state.head.as_ref();
        let (body, title) = match (&hashed, previous) {
            // Transcripts are lines: a head without a title gets one only from new lines.
            (Some(_), Some(head)) => (
                &write.transcript[..],
                head.title
                    .clone()
                    .or_else(|| lobu_core::transcript::title(&write.transcript)),
            ),
            _ => {
                let from = head_bytes
                    .filter(|_| append)
                    .map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX))
                    .min(size);
                let title = title(previous, &write.transcript, append);
                (&write.transcript[from..], title)
            }
        };
        let written = Written {
            body,
            title,
            state: digests.state,
        };
        commit_completed(conversation, state, record, written, append)
            .map(|version| (version, true))
    } else {
        state.last_version = record.version;
        conversation.save(state)?;
        inner.reached(Step::VersionReserved)?;
        records::write_forensic(conversation, &record, &write.transcript)?;
        Ok((Version(record.version), true))
    }
}

/// The head's hash state resumed over an append's new bytes, when the append is a completed
/// write over the whole head that carries one; `None` otherwise.
fn hash_append(state: &State, write: &Persist) -> Result<Option<TranscriptHash>> {
    let (Some(base_len), Some(head)) = (write.base_len, state.head.as_ref()) else {
        return Ok(None);
    };
    let Some(hex_state) = head.sha256_state.as_deref() else {
        return Ok(None);
    };
    let over_head = write.expected == Some(Version(head.version))
        && base_len as u64 == head.bytes
        && !write.transcript.is_empty()
        && write.status == TerminalStatus::Completed;
    if !over_head {
        return Ok(None);
    }
    let Ok(bytes) = hex::decode(hex_state) else {
        return Ok(None); // unreadable: decided on the whole transcript instead
    };
    let mut hasher = TranscriptHash::resume(&bytes)?;
    hasher.update(&write.transcript);
    Ok(Some(hasher))
}

/// What a completed write adds to the transcript: `body` (after the head for an append, the
/// whole transcript otherwise), the head's title and hash state.
pub(crate) struct Written<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) title: Option<String>,
    pub(crate) state: String,
}

/// An append as the whole transcript it stands for (format 1 keeps whole transcripts and
/// reads the head on every persist anyway; format 2 appends without it).
fn whole(conversation: &Conversation<'_>, state: &State, mut write: Persist) -> Result<Persist> {
    let Some(base_len) = write.base_len.take() else {
        return Ok(write);
    };
    let head_bytes = match &state.head {
        Some(head) => read_prefix(&conversation.transcript_path(head), head.bytes)?,
        None => Vec::new(),
    };
    let head = state.head.as_ref().map(|h| (Version(h.version), h.bytes));
    let expected = write.expected;
    let to = persist_plan::append_to(conversation.key, expected, base_len, head, || {
        let Some(record) = expected
            .map(|v| records::completed(conversation, state, v.0))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let prefix = usize::try_from(record.bytes)
            .ok()
            .and_then(|n| head_bytes.get(..n));
        let starts_head = prefix.is_some_and(|p| hex(&digest(p)) == record.sha256);
        Ok(starts_head.then_some(record.bytes))
    })?;
    let appended = std::mem::take(&mut write.transcript);
    write.transcript = persist_plan::rebuild(to, &head_bytes, base_len, appended);
    Ok(write)
}

/// The conversation's next version. An import may have taken the largest one (versions are
/// the exporter's to choose): refused, never wrapped round to a version already issued.
pub(crate) fn next_version(state: &State, key: &ConversationKey) -> Result<u64> {
    state.last_version.checked_add(1).ok_or_else(|| {
        Error::new(
            ErrorKind::Other,
            format!("{key} has used every version up to {}", u64::MAX),
        )
    })
}

pub(crate) fn never_leased(key: &ConversationKey) -> Error {
    Error::fenced(format!(
        "no lease of {key} was ever issued; acquire one first"
    ))
}

pub(crate) fn check_fence(state: &State, fence: Fence, key: &ConversationKey) -> Result<()> {
    let newest = (state.last_fence != 0).then_some(Fence(state.last_fence));
    persist_plan::check_fence(key, fence, newest)
}

/// The run's stored snapshots, newest first, for the persist plan. A retry matches on status
/// too, so only a non-completed write needs the forensic records.
fn earlier(
    conversation: &Conversation<'_>,
    state: &State,
    write: &Persist,
    size: u64,
    digest: &str,
) -> Result<Vec<Earlier>> {
    let completed = records::completed_of_run(conversation, state, &write.run)?;
    let forensic = if write.status == TerminalStatus::Completed {
        Vec::new()
    } else {
        records::forensic(conversation, state)?
    };
    let mut earlier: Vec<Earlier> = completed
        .iter()
        .chain(
            forensic
                .iter()
                .map(|f| &f.record)
                .filter(|r| r.run == write.run),
        )
        .map(|r| Earlier {
            version: Version(r.version),
            status: r.status,
            same_bytes: r.bytes == size && r.sha256 == digest,
        })
        .collect();
    earlier.sort_by_key(|e| std::cmp::Reverse(e.version));
    Ok(earlier)
}

/// Write a completed snapshot and commit it as the head (an import writes its head here
/// too). An append's bytes and history line are written unsynced and carried by the state
/// record's line, which is the one sync (see [`crate::carry`]); otherwise (a rewrite, or
/// where the boot cannot be told) both are synced before the state record commits them, and
/// a rewrite replaces the record file, retiring what its lines carried.
pub(crate) fn commit_completed(
    conversation: &Conversation<'_>,
    state: &mut State,
    record: Record,
    written: Written<'_>,
    append: bool,
) -> Result<Version> {
    let inner = conversation.inner;
    let disk = inner.disk;
    let previous = state.head.take();
    let (offset, history_offset, turns) = previous
        .as_ref()
        .map_or((0, 0, 0), |h| (h.bytes, h.history_bytes, h.turns));
    let carried_text = append
        .then(|| conversation.carriable(written.body))
        .flatten();
    // An append goes on in the head's file (a first turn starts one); a rewrite writes a
    // file of its own, which the commit names: committed bytes never change in place.
    let file = match previous.as_ref().and_then(|h| h.file.clone()) {
        Some(file) if append => file,
        _ => transcript_name(record.version),
    };
    let mut appended = Vec::with_capacity(2);
    if append {
        let path = conversation.path(&file);
        appended.push(disk.append_at(&path, offset, written.body)?);
    } else {
        disk.write_atomic(&conversation.dir, &file, written.body)?;
    }
    inner.reached(Step::TranscriptWritten)?;
    let line = records::history_line(conversation, &record)?;
    let history = conversation.path(HISTORY);
    appended.push(disk.append_at(&history, history_offset, &line)?);
    if carried_text.is_none() {
        // Both synced before the commit below, which is what makes them count.
        disk.sync_appended(&conversation.dir, &appended)?;
    }
    drop(appended);
    inner.reached(Step::HistoryWritten)?;
    state.last_version = record.version;
    state.head = Some(Head {
        version: record.version,
        run: record.run,
        bytes: record.bytes,
        sha256: record.sha256,
        sha256_state: Some(written.state),
        turns: turns + 1,
        title: written.title,
        written_at: record.written_at,
        history_bytes: history_offset + line.len() as u64,
        staged: false,
        file: Some(file),
    });
    match carried_text {
        Some(text) => {
            let carried = Carried {
                at: offset,
                transcript: Cow::Borrowed(text),
                history_at: history_offset,
                history: String::from_utf8_lossy(&line),
            };
            conversation.commit_carrying(state, &carried)?;
        }
        None if append => conversation.save(state)?,
        None => conversation.replace(state)?,
    }
    inner.reached(Step::Committed)?;
    if let Some(old) = previous.and_then(|h| h.file).filter(|_| !append) {
        // Unsynced: a name that came back after a crash is removed by the next writer.
        remove_file(&conversation.path(&old))?;
    }
    Ok(Version(record.version))
}

/// The listing title. Entries are lines, so when the old head ended a line, its title (or
/// the appended lines' title, if it had none) is the new one: no need to parse it all again.
fn title(previous: Option<&Head>, transcript: &[u8], append: bool) -> Option<String> {
    let offset = previous.map_or(0, |h| h.bytes as usize);
    let ends_a_line = offset == 0 || transcript.get(offset - 1) == Some(&b'\n');
    match previous {
        Some(head) if append && ends_a_line => head
            .title
            .clone()
            .or_else(|| lobu_core::transcript::title(&transcript[offset..])),
        _ => lobu_core::transcript::title(transcript),
    }
}
