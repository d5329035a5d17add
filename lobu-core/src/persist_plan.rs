//! The persist plan: what [`SessionStore::persist`](crate::SessionStore::persist) (and the
//! transcript of a [`RunQueue::complete`](crate::RunQueue::complete)) does with a write,
//! decided the same way by every backend. A backend loads the conversation under its lock,
//! describes what it found ([`Found`]), asks [`plan`], and writes what the plan says; how
//! the bytes are laid out (appended, a delta, a whole copy) is the backend's business.
//!
//! The contract's order: the size limit and the fence are checked by the backend first
//! ([`check_size`], [`check_fence`]); then the same-run rules (a retry of a stored write, the
//! run extending its own head, a different completed transcript of the run); then the
//! expected version of a completed write.

use crate::error::{Error, Result};
use crate::id::{ConversationKey, RunId};
use crate::lock::Fence;
use crate::session::{TerminalStatus, Version};

/// A snapshot the writing run stored before (an earlier attempt, or the same write before
/// its answer was lost), as the backend found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earlier {
    /// Its version.
    pub version: Version,
    /// How the attempt that wrote it ended.
    pub status: TerminalStatus,
    /// Whether its bytes are exactly the write's (compared by digest or byte for byte).
    pub same_bytes: bool,
}

/// What the backend found for a write, under the conversation's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    /// The head version (`None`: no completed transcript).
    pub head: Option<Version>,
    /// Whether the write's bytes start with the head's bytes and are longer.
    pub extends_head: bool,
    /// The writing run's stored snapshots, newest first.
    pub earlier: &'a [Earlier],
}

/// What to do with a write that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Plan {
    /// The same run stored the same status and bytes already: answer with that version and
    /// write nothing.
    Retry(Version),
    /// A snapshot of a failed attempt, kept beside the head and never hydrated.
    Forensic,
    /// A new head. `extends_head`: its bytes start with the head's (append only the rest).
    Head {
        /// Whether the write extends the head.
        extends_head: bool,
    },
}

/// The plan for `write` of `run` with `status`, expecting head `expected`, given what the
/// backend `found`. A conflict is an error that changes nothing.
pub fn plan(
    key: &ConversationKey,
    run: &RunId,
    status: TerminalStatus,
    expected: Option<Version>,
    found: &Found<'_>,
) -> Result<Plan> {
    if let Some(stored) = found
        .earlier
        .iter()
        .find(|e| e.status == status && e.same_bytes)
    {
        return Ok(Plan::Retry(stored.version));
    }
    let completed = status == TerminalStatus::Completed;
    // Only a completed snapshot of the run decides: non-completed ones are earlier attempts
    // kept for forensics, and do not stop a later attempt of the run from writing.
    let mut extends_own_head = false;
    if let Some(done) = found
        .earlier
        .iter()
        .find(|e| e.status == TerminalStatus::Completed)
    {
        extends_own_head = completed && found.head == Some(done.version) && found.extends_head;
        if !extends_own_head {
            return Err(Error::conflict(format!(
                "{key}: run {run} already stored a different completed transcript at {}",
                done.version
            )));
        }
    }
    if !completed {
        return Ok(Plan::Forensic);
    }
    // A run extending its own head started from an older head: that is not a conflict.
    if !extends_own_head && expected != found.head {
        return Err(Error::conflict(format!(
            "{key}: the write expected head {}, but the head is {}",
            show(expected),
            show(found.head)
        )));
    }
    Ok(Plan::Head {
        extends_head: found.extends_head,
    })
}

/// `TooLarge` if a transcript of `size` bytes is over `limit` (the first check).
pub fn check_size(key: &ConversationKey, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::too_large(format!(
            "transcript of {key} is {size} bytes; the limit is {limit}"
        )));
    }
    Ok(())
}

/// `Fenced` unless `fence` is the conversation's newest (`newest`: `None` when no fence was
/// ever issued for it). The second check.
pub fn check_fence(key: &ConversationKey, fence: Fence, newest: Option<Fence>) -> Result<()> {
    match newest {
        Some(newest) if newest == fence => Ok(()),
        Some(newest) => Err(Error::fenced(format!(
            "write to {key} carries {fence}, but {newest} is the newest"
        ))),
        None => Err(Error::fenced(format!(
            "no fence of {key} was ever issued; claim a run or acquire a lease first"
        ))),
    }
}

/// What an append write ([`Persist::base_len`](crate::Persist::base_len)) appends to, as
/// decided by [`append_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendTo {
    /// No bytes: the appended bytes are the whole transcript (a write over no head).
    Nothing,
    /// The first `base_len` bytes of the head, which are the expected version's.
    Head,
}

/// What an append write of `base_len` bytes of `expected` then new bytes stands for, given
/// the `head` the backend found (its version and length). An append names its base by
/// version, so the store never reads or hashes it to check it: when `expected` is the head,
/// its first `base_len` bytes are the base; when it is not, `ancestor` (called only then)
/// says whether the head starts with `expected`'s bytes and how long they are, and the head
/// stands in for them (the plan then answers a retry or a conflict). `InvalidInput` if the
/// base is longer than `expected`, or is not empty over no head; `Conflict` if `expected` is
/// neither the head nor a prefix of it. Nothing is written either way.
pub fn append_to(
    key: &ConversationKey,
    expected: Option<Version>,
    base_len: usize,
    head: Option<(Version, u64)>,
    ancestor: impl FnOnce() -> Result<Option<u64>>,
) -> Result<AppendTo> {
    let Some(expected) = expected else {
        if base_len != 0 {
            return Err(Error::invalid(format!(
                "{key}: a write expecting no head appends to byte {base_len}; it can only start at 0"
            )));
        }
        return Ok(AppendTo::Nothing);
    };
    let len = match head {
        Some((version, len)) if version == expected => Some(len),
        Some(_) => ancestor()?,
        None => None,
    };
    let Some(len) = len else {
        return Err(Error::conflict(format!(
            "{key}: the write appends to {expected}, which is neither the head ({}) nor a prefix of it",
            show(head.map(|(v, _)| v))
        )));
    };
    if u64::try_from(base_len).map_or(true, |b| b > len) {
        return Err(Error::invalid(format!(
            "{key}: the write appends at byte {base_len} of {expected}, which is {len} bytes"
        )));
    }
    Ok(AppendTo::Head)
}

/// The whole transcript an append write stands for: the first `base_len` bytes of `head`
/// (when [`append_to`] said [`AppendTo::Head`]) followed by `appended`.
pub fn rebuild(to: AppendTo, head: &[u8], base_len: usize, appended: bytes::Bytes) -> bytes::Bytes {
    match to {
        AppendTo::Nothing => appended,
        AppendTo::Head => {
            let base = &head[..base_len.min(head.len())];
            let mut whole = Vec::with_capacity(base.len() + appended.len());
            whole.extend_from_slice(base);
            whole.extend_from_slice(&appended);
            whole.into()
        }
    }
}

fn show(version: Option<Version>) -> String {
    version.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use TerminalStatus::{Completed, Failed};

    fn key() -> ConversationKey {
        ConversationKey::parse("acme", "bot", "c1").unwrap()
    }

    fn decide(status: TerminalStatus, expected: Option<u64>, found: Found<'_>) -> Result<Plan> {
        plan(
            &key(),
            &RunId::generate(),
            status,
            expected.map(Version),
            &found,
        )
    }

    fn earlier(version: u64, status: TerminalStatus, same_bytes: bool) -> Earlier {
        Earlier {
            version: Version(version),
            status,
            same_bytes,
        }
    }

    fn found(head: Option<u64>, extends_head: bool, earlier: &[Earlier]) -> Found<'_> {
        Found {
            head: head.map(Version),
            extends_head,
            earlier,
        }
    }

    #[test]
    fn a_first_completed_write_expecting_no_head_becomes_the_head() {
        let plan = decide(Completed, None, found(None, false, &[])).unwrap();
        assert_eq!(
            plan,
            Plan::Head {
                extends_head: false
            }
        );
    }

    #[test]
    fn a_write_expecting_the_head_extends_it() {
        let plan = decide(Completed, Some(3), found(Some(3), true, &[])).unwrap();
        assert_eq!(plan, Plan::Head { extends_head: true });
        let rewrite = decide(Completed, Some(3), found(Some(3), false, &[])).unwrap();
        assert_eq!(
            rewrite,
            Plan::Head {
                extends_head: false
            }
        );
    }

    #[test]
    fn a_stale_or_future_expected_version_conflicts() {
        for expected in [None, Some(2), Some(4)] {
            let e = decide(Completed, expected, found(Some(3), true, &[])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Conflict, "expected {expected:?}");
        }
        let e = decide(Completed, Some(1), found(None, false, &[])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn the_same_status_and_bytes_again_is_a_retry_of_the_stored_version() {
        let stored = [earlier(5, Completed, true)];
        // Whatever the head and expected version are by now.
        let plan = decide(Completed, Some(3), found(Some(9), false, &stored)).unwrap();
        assert_eq!(plan, Plan::Retry(Version(5)));
        let failed = [earlier(6, Failed, true)];
        let plan = decide(Failed, None, found(Some(3), false, &failed)).unwrap();
        assert_eq!(plan, Plan::Retry(Version(6)));
    }

    #[test]
    fn the_same_bytes_with_another_status_is_not_a_retry() {
        let stored = [earlier(6, Failed, true)];
        let plan = decide(Completed, Some(3), found(Some(3), true, &stored)).unwrap();
        assert_eq!(plan, Plan::Head { extends_head: true });
    }

    #[test]
    fn a_run_may_extend_its_own_head_whatever_it_expected() {
        let stored = [earlier(4, Completed, false)];
        let plan = decide(Completed, Some(3), found(Some(4), true, &stored)).unwrap();
        assert_eq!(plan, Plan::Head { extends_head: true });
    }

    #[test]
    fn different_completed_bytes_of_the_same_run_conflict() {
        let stored = [earlier(4, Completed, false)];
        // Not an extension, or the run's snapshot is no longer the head, or not completed.
        for (head, extends, status) in [
            (Some(4), false, Completed),
            (Some(7), true, Completed),
            (Some(4), true, Failed),
        ] {
            let e = decide(status, Some(4), found(head, extends, &stored)).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::Conflict,
                "{head:?} {extends} {status:?}"
            );
        }
    }

    #[test]
    fn failed_attempts_of_the_run_do_not_stop_a_later_one() {
        let stored = [earlier(5, Failed, false), earlier(4, Failed, false)];
        let plan = decide(Completed, Some(3), found(Some(3), true, &stored)).unwrap();
        assert_eq!(plan, Plan::Head { extends_head: true });
        let again = decide(Failed, Some(3), found(Some(3), true, &stored)).unwrap();
        assert_eq!(again, Plan::Forensic);
    }

    #[test]
    fn a_failed_write_is_forensic_whatever_the_head() {
        let plan = decide(Failed, Some(1), found(Some(3), false, &[])).unwrap();
        assert_eq!(plan, Plan::Forensic);
    }

    #[test]
    fn sizes_over_the_limit_are_too_large() {
        assert!(check_size(&key(), 10, 10).is_ok());
        let e = check_size(&key(), 11, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
    }

    #[test]
    fn only_the_newest_issued_fence_may_write() {
        assert!(check_fence(&key(), Fence(7), Some(Fence(7))).is_ok());
        for newest in [Some(Fence(8)), Some(Fence(6)), None] {
            let e = check_fence(&key(), Fence(7), newest).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Fenced, "{newest:?}");
        }
    }

    fn to(expected: Option<u64>, base_len: usize, head: Option<(u64, u64)>) -> Result<AppendTo> {
        append_to(
            &key(),
            expected.map(Version),
            base_len,
            head.map(|(v, l)| (Version(v), l)),
            || {
                Ok(Some(5)) // the head starts with the expected version, 5 bytes long
            },
        )
    }

    #[test]
    fn an_append_over_the_head_appends_to_its_first_bytes() {
        assert_eq!(to(Some(3), 10, Some((3, 10))).unwrap(), AppendTo::Head);
        assert_eq!(to(Some(3), 4, Some((3, 10))).unwrap(), AppendTo::Head);
        assert_eq!(to(Some(3), 0, Some((3, 10))).unwrap(), AppendTo::Head);
    }

    #[test]
    fn an_append_past_the_end_of_its_base_is_invalid() {
        let err = to(Some(3), 11, Some((3, 10))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = to(Some(2), 6, Some((3, 10))).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "past the ancestor's 5 bytes"
        );
        let err = to(None, 1, None).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidInput,
            "over no head only from 0"
        );
    }

    #[test]
    fn an_append_over_no_head_is_the_whole_transcript() {
        assert_eq!(to(None, 0, None).unwrap(), AppendTo::Nothing);
        assert_eq!(
            to(None, 0, Some((3, 10))).unwrap(),
            AppendTo::Nothing,
            "the plan conflicts"
        );
    }

    #[test]
    fn an_append_over_an_ancestor_of_the_head_stands_on_the_head() {
        assert_eq!(to(Some(2), 5, Some((3, 10))).unwrap(), AppendTo::Head);
    }

    #[test]
    fn an_append_over_a_version_that_is_not_in_the_head_conflicts() {
        let not_prefix = append_to(&key(), Some(Version(2)), 1, Some((Version(3), 10)), || {
            Ok(None)
        });
        assert_eq!(not_prefix.unwrap_err().kind(), ErrorKind::Conflict);
        let no_head = to(Some(2), 1, None).unwrap_err();
        assert_eq!(no_head.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn a_rebuilt_append_is_the_base_then_the_new_bytes() {
        let appended = bytes::Bytes::from_static(b"new\n");
        assert_eq!(
            rebuild(AppendTo::Head, b"old\nrest", 4, appended.clone()),
            "old\nnew\n"
        );
        assert_eq!(rebuild(AppendTo::Nothing, b"ignored", 0, appended), "new\n");
    }
}
