//! What one `persist` call does, decided from the locked conversations row and the run's
//! latest snapshot, in the contract's order. Pure, so every branch is tested without a server.

use bytes::Bytes;
use lobu_core::persist_plan::{self, Earlier, Found};
use lobu_core::transcript::hash::TranscriptHash;
use lobu_core::{
    ConversationKey, Error, ErrorKind, Fence, Persist, Result, TerminalStatus, Version,
};

use crate::delta::{Chain, Digests, last_line_start, store_as_delta};

/// The conversations row, locked `FOR UPDATE` by persist.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Head {
    pub(crate) fence: i64,
    pub(crate) head_seq: Option<i64>,
    pub(crate) head_bytes: i64,
    pub(crate) head_digest: Option<Vec<u8>>,
    /// The SHA-256 state after the head's bytes (`None`: written before schema version 4).
    pub(crate) head_state: Option<Vec<u8>>,
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
    /// A completed turn stored as `new_bytes`, which follow the head's first `from` bytes.
    Delta {
        from: usize,
        new_bytes: Bytes,
        digests: Digests,
        title: Option<String>,
    },
    /// A completed append stored as a whole copy the server builds from the head's chain
    /// and `new_bytes` (a re-base: the chain is full).
    Rebase {
        new_bytes: Bytes,
        digests: Digests,
        title: Option<String>,
    },
    /// A completed turn stored as a whole copy (a re-base, or a rewrite of history).
    Base {
        digests: Digests,
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
    let newest = head.and_then(|h| u64::try_from(h.fence).ok()).map(Fence);
    persist_plan::check_fence(key, write.fence, newest)?;
    head.ok_or_else(|| Error::fenced(format!("{key}: no fence was ever issued")))
}

/// Checks 3 and 4 of the contract (lobu-core's [`persist_plan`]), then where the bytes go.
/// `earlier` holds the run's stored snapshots, newest first.
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
    // The head's bytes are a prefix of the write (possibly all of it).
    let keeps_head = head
        .head_digest
        .as_deref()
        .is_some_and(|d| digests.extends(d));
    let earlier = same_run(earlier, len, &digests.full)?;
    let found = Found {
        head: head.head_seq.map(version).transpose()?,
        extends_head: keeps_head && bytes.len() > head_len,
        earlier: &earlier,
    };
    match persist_plan::plan(key, &write.run, write.status, write.expected, &found)? {
        persist_plan::Plan::Retry(v) => Ok(Plan::Retry(seq(v))),
        persist_plan::Plan::Forensic => Ok(Plan::Forensic {
            digest: digests.full,
        }),
        persist_plan::Plan::Head { .. } => Ok(layout(
            head,
            &write.transcript,
            head_len,
            keeps_head,
            digests,
            max_deltas,
        )),
        other => Err(unknown_plan(key, other)),
    }
}

/// The error for a [`persist_plan::Plan`] added to lobu-core after this store: the write is
/// refused, nothing is written.
fn unknown_plan(key: &ConversationKey, plan: persist_plan::Plan) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("{key}: this version of lobu-store-pg cannot carry out {plan:?}"),
    )
}

/// The plan of an append that extends the head it names, from the head's stored hash state:
/// a delta, or a re-base the server builds when the chain is full; the client sends and
/// hashes the appended bytes only. `None` when that does not apply (not an append, a head
/// without a state, another base, nothing appended, a non-completed write): the caller
/// rebuilds the whole transcript the append stands for and plans that.
pub(crate) fn plan_append(
    key: &ConversationKey,
    write: &Persist,
    head: &Head,
    earlier: &[RunSnapshot],
    max_deltas: u32,
) -> Result<Option<Plan>> {
    let appended = &write.transcript;
    let (Some(base_len), Some(head_seq), Some(state)) =
        (write.base_len, head.head_seq, head.head_state.as_deref())
    else {
        return Ok(None);
    };
    let head_version = version(head_seq)?;
    let chain = Chain {
        base_bytes: head.base_bytes,
        deltas: head.chain_deltas,
        delta_bytes: head.chain_bytes,
    };
    let extends = write.expected == Some(head_version)
        && i64::try_from(base_len).is_ok_and(|n| n == head.head_bytes)
        && !appended.is_empty()
        && write.status == TerminalStatus::Completed;
    if !extends {
        return Ok(None);
    }
    let as_delta = store_as_delta(chain, appended.len(), max_deltas);
    let mut hasher = TranscriptHash::resume(state)?;
    hasher.update(appended);
    let digests = Digests::after(&hasher, None);
    let len = i64::try_from(write.len()).unwrap_or(i64::MAX);
    let earlier = same_run(earlier, len, &digests.full)?;
    let found = Found {
        head: Some(head_version),
        extends_head: true,
        earlier: &earlier,
    };
    Ok(
        match persist_plan::plan(key, &write.run, write.status, write.expected, &found)? {
            persist_plan::Plan::Retry(v) => Some(Plan::Retry(seq(v))),
            persist_plan::Plan::Forensic => None,
            persist_plan::Plan::Head { .. } => {
                // Transcripts are lines: a head without a title gets one only from new lines.
                let title = (!head.has_title)
                    .then(|| lobu_core::transcript::title(appended))
                    .flatten();
                let new_bytes = appended.clone();
                Some(if as_delta {
                    Plan::Delta {
                        from: base_len,
                        new_bytes,
                        digests,
                        title,
                    }
                } else {
                    Plan::Rebase {
                        new_bytes,
                        digests,
                        title,
                    }
                })
            }
            other => return Err(unknown_plan(key, other)),
        },
    )
}

/// The run's stored snapshots as the persist plan sees them, for a write of `len` bytes with
/// digest `digest`.
fn same_run(earlier: &[RunSnapshot], len: i64, digest: &[u8]) -> Result<Vec<Earlier>> {
    earlier
        .iter()
        .map(|s| {
            Ok(Earlier {
                version: version(s.seq)?,
                status: TerminalStatus::parse(&s.status)?,
                same_bytes: s.byte_size == len && s.digest == digest,
            })
        })
        .collect()
}

fn seq(v: Version) -> i64 {
    i64::try_from(v.0).unwrap_or(i64::MAX)
}

/// How a new head is stored: a delta of its new bytes while the chain is short, else a
/// whole copy that starts a new chain.
fn layout(
    head: &Head,
    bytes: &Bytes,
    head_len: usize,
    keeps_head: bool,
    digests: Digests,
    max_deltas: u32,
) -> Plan {
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
    if keeps_head && store_as_delta(chain, new_bytes, max_deltas) {
        Plan::Delta {
            from: head_len,
            new_bytes: bytes.slice(head_len..),
            digests,
            title: new_title(),
        }
    } else if keeps_head {
        Plan::Base {
            digests,
            title: new_title(),
            replace_title: false,
        }
    } else {
        // History was rewritten (compaction, a provider reset): the title is read afresh.
        Plan::Base {
            digests,
            title: lobu_core::transcript::title(bytes),
            replace_title: true,
        }
    }
}

/// A stored sequence number as a version (they are never negative).
fn version(seq: i64) -> Result<Version> {
    u64::try_from(seq)
        .map(Version)
        .map_err(|_| Error::corrupt(format!("stored version {seq} is negative")))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use lobu_core::{ErrorKind, Fence, RunId, Version};

    use super::*;

    const HEAD: &[u8] = b"{\"type\":\"session\"}\n{\"n\":1}\n";

    fn key() -> ConversationKey {
        ConversationKey::parse("acme", "bot", "c1").unwrap()
    }

    fn head() -> Head {
        Head {
            fence: 7,
            head_seq: Some(10),
            head_bytes: HEAD.len() as i64,
            head_digest: Some(Digests::of(HEAD, None).full),
            head_state: Some(Digests::of(HEAD, None).state),
            base_bytes: HEAD.len() as i64,
            chain_deltas: 0,
            chain_bytes: 0,
            has_title: false,
        }
    }

    fn write(run: &RunId, status: TerminalStatus, bytes: &[u8], expected: Option<u64>) -> Persist {
        Persist {
            run: run.clone(),
            status,
            transcript: Bytes::copy_from_slice(bytes),
            expected: expected.map(Version),
            fence: Fence(7),
            base_len: None,
        }
    }

    fn stored(seq: i64, status: &str, bytes: &[u8]) -> RunSnapshot {
        RunSnapshot {
            seq,
            status: status.to_owned(),
            byte_size: bytes.len() as i64,
            digest: Digests::of(bytes, None).full,
        }
    }

    fn extended() -> Vec<u8> {
        [HEAD, b"{\"n\":2}\n"].concat()
    }

    #[test]
    fn only_the_newest_fence_may_write() {
        let run = RunId::generate();
        let h = head();
        let w = write(&run, TerminalStatus::Completed, HEAD, Some(10));
        assert!(check_fence(&key(), &w, Some(&h)).is_ok());
        let stale = Persist {
            fence: Fence(6),
            ..w.clone()
        };
        let never = Persist {
            fence: Fence(8),
            ..w.clone()
        };
        for bad in [&stale, &never] {
            let e = check_fence(&key(), bad, Some(&h)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Fenced);
        }
        let e = check_fence(&key(), &w, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "no lease ever issued");
    }

    #[test]
    fn a_turn_extending_the_head_is_a_delta_of_its_new_bytes() {
        let run = RunId::generate();
        let w = write(&run, TerminalStatus::Completed, &extended(), Some(10));
        let plan = plan(&key(), &w, &head(), &[], 32).unwrap();
        let Plan::Delta { from, .. } = plan else {
            panic!("not a delta: {plan:?}");
        };
        assert_eq!(from, HEAD.len());
    }

    #[test]
    fn a_rewrite_or_a_long_chain_is_a_whole_copy() {
        let run = RunId::generate();
        let rewrite = write(
            &run,
            TerminalStatus::Completed,
            b"{\"compacted\":1}\n",
            Some(10),
        );
        let plan1 = plan(&key(), &rewrite, &head(), &[], 32).unwrap();
        assert!(
            matches!(
                plan1,
                Plan::Base {
                    replace_title: true,
                    ..
                }
            ),
            "{plan1:?}"
        );
        let long = Head {
            chain_deltas: 32,
            ..head()
        };
        let w = write(&run, TerminalStatus::Completed, &extended(), Some(10));
        let plan2 = plan(&key(), &w, &long, &[], 32).unwrap();
        assert!(
            matches!(
                plan2,
                Plan::Base {
                    replace_title: false,
                    ..
                }
            ),
            "{plan2:?}"
        );
    }

    #[test]
    fn a_stale_expected_version_conflicts_but_forensic_copies_ignore_it() {
        let run = RunId::generate();
        let stale = write(&run, TerminalStatus::Completed, &extended(), Some(9));
        let e = plan(&key(), &stale, &head(), &[], 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let none = write(&run, TerminalStatus::Completed, &extended(), None);
        assert_eq!(
            plan(&key(), &none, &head(), &[], 32).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        let failed = write(&run, TerminalStatus::Failed, &extended(), Some(9));
        assert!(matches!(
            plan(&key(), &failed, &head(), &[], 32).unwrap(),
            Plan::Forensic { .. }
        ));
    }

    #[test]
    fn same_run_retries_extensions_and_divergence() {
        let run = RunId::generate();
        let own_head = [stored(10, "completed", HEAD)];
        let retry = write(&run, TerminalStatus::Completed, HEAD, Some(3));
        assert_eq!(
            plan(&key(), &retry, &head(), &own_head, 32).unwrap(),
            Plan::Retry(10)
        );
        // Extending its own head needs no matching `expected`.
        let grow = write(&run, TerminalStatus::Completed, &extended(), Some(3));
        assert!(matches!(
            plan(&key(), &grow, &head(), &own_head, 32).unwrap(),
            Plan::Delta { .. }
        ));
        let diverge = write(
            &run,
            TerminalStatus::Completed,
            b"{\"other\":1}\n",
            Some(10),
        );
        let e = plan(&key(), &diverge, &head(), &own_head, 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        // Once another run moved the head, the old run can no longer extend it.
        let superseded = [stored(9, "completed", HEAD)];
        let e = plan(&key(), &grow, &head(), &superseded, 32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn a_failed_attempt_does_not_stop_the_next_attempt_of_the_run() {
        let run = RunId::generate();
        let attempts = [stored(11, "failed", &extended())];
        let again = write(&run, TerminalStatus::Failed, &extended(), None);
        assert_eq!(
            plan(&key(), &again, &head(), &attempts, 32).unwrap(),
            Plan::Retry(11)
        );
        let completes = write(&run, TerminalStatus::Completed, &extended(), Some(10));
        let plan = plan(&key(), &completes, &head(), &attempts, 32).unwrap();
        assert!(matches!(plan, Plan::Delta { .. }), "{plan:?}");
    }
}
