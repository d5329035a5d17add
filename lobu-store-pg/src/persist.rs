//! What one `persist` call does, decided from the locked conversations row and the run's
//! latest snapshot, in the contract's order. Pure, so every branch is tested without a server.

use lobu_core::{ConversationKey, Error, Persist, Result, TerminalStatus};

use crate::delta::{Chain, Digests, last_line_start, store_as_delta};

/// The conversations row, locked `FOR UPDATE` by persist.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Head {
    pub(crate) fence: i64,
    pub(crate) head_seq: Option<i64>,
    pub(crate) head_bytes: i64,
    pub(crate) head_digest: Option<Vec<u8>>,
    pub(crate) base_bytes: i64,
    pub(crate) chain_deltas: i32,
    pub(crate) chain_bytes: i64,
    pub(crate) has_title: bool,
}

/// A snapshot the writing run stored before (a retry, an earlier attempt).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunSnapshot {
    pub(crate) seq: i64,
    pub(crate) status: String,
    pub(crate) byte_size: i64,
    pub(crate) digest: Vec<u8>,
}

/// What to write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The same run, status and bytes are stored already: answer with that version.
    Retry(i64),
    /// A non-completed whole copy beside the head, never hydrated.
    Forensic { digest: Vec<u8> },
    /// A completed turn stored as the bytes after the head's `from` bytes.
    Delta {
        from: usize,
        digest: Vec<u8>,
        title: Option<String>,
    },
    /// A completed turn stored as a whole copy (a re-base, or a rewrite of history).
    Base {
        digest: Vec<u8>,
        title: Option<String>,
        replace_title: bool,
    },
}

/// Check 2 of the contract: the writer's fence is the newest issued. No row means no fence
/// was ever issued for this conversation.
pub(crate) fn check_fence<'h>(
    key: &ConversationKey,
    write: &Persist,
    head: Option<&'h Head>,
) -> Result<&'h Head> {
    head.filter(|h| u64::try_from(h.fence).is_ok_and(|f| f == write.fence.0))
        .ok_or_else(|| {
            Error::fenced(format!(
                "{key}: {} is not the newest fence of this conversation",
                write.fence
            ))
        })
}

/// Checks 3 and 4 of the contract, then where the bytes go. `earlier` holds the run's
/// stored snapshots, newest first.
pub(crate) fn plan(
    key: &ConversationKey,
    write: &Persist,
    head: &Head,
    earlier: &[RunSnapshot],
    max_deltas: u32,
) -> Result<Plan> {
    let bytes = &write.transcript[..];
    let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let head_len = usize::try_from(head.head_bytes).unwrap_or(usize::MAX);
    let digests = Digests::of(bytes, head.head_seq.map(|_| head_len));
    let extends_head = head
        .head_digest
        .as_deref()
        .is_some_and(|d| digests.extends(d));
    let completed = write.status == TerminalStatus::Completed;

    if let Some(stored) = earlier.iter().find(|s| {
        s.status == write.status.as_str() && s.byte_size == len && s.digest == digests.full
    }) {
        return Ok(Plan::Retry(stored.seq));
    }
    // Only a completed snapshot of the run decides: non-completed ones are earlier attempts
    // kept for forensics, and a later attempt of the run is checked as a new write.
    let mut same_run = false;
    if let Some(done) = earlier.iter().find(|s| s.status == "completed") {
        let grows_head =
            completed && Some(done.seq) == head.head_seq && len > done.byte_size && extends_head;
        if !grows_head {
            return Err(Error::conflict(format!(
                "{key}: run {} already stored a different completed transcript at v{}",
                write.run, done.seq
            )));
        }
        same_run = true;
    }
    if !completed {
        return Ok(Plan::Forensic {
            digest: digests.full,
        });
    }
    let expected_ok = match (write.expected, head.head_seq) {
        (None, None) => true,
        (Some(v), Some(h)) => u64::try_from(h).is_ok_and(|h| h == v.0),
        _ => false,
    };
    // A same-run extension started from an older head; the run's own snapshot is the head.
    if !same_run && !expected_ok {
        return Err(Error::conflict(format!(
            "{key}: expected head {}, but the head is {}",
            write.expected.map_or("none".to_owned(), |v| v.to_string()),
            head.head_seq.map_or("none".to_owned(), |s| format!("v{s}"))
        )));
    }
    let chain = Chain {
        base_bytes: head.base_bytes,
        deltas: head.chain_deltas,
        delta_bytes: head.chain_bytes,
    };
    // Only the new bytes can hold a first title when the head had none.
    let new_title = || {
        (!head.has_title)
            .then(|| lobu_core::transcript::title(&bytes[last_line_start(bytes, head_len)..]))
            .flatten()
    };
    let new_bytes = bytes.len().saturating_sub(head_len);
    Ok(
        if extends_head && store_as_delta(chain, new_bytes, max_deltas) {
            Plan::Delta {
                from: head_len,
                digest: digests.full,
                title: new_title(),
            }
        } else if extends_head {
            Plan::Base {
                digest: digests.full,
                title: new_title(),
                replace_title: false,
            }
        } else {
            // History was rewritten (compaction, a provider reset): the title is read afresh.
            Plan::Base {
                digest: digests.full,
                title: lobu_core::transcript::title(bytes),
                replace_title: true,
            }
        },
    )
}
