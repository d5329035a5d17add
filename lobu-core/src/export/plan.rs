//! What an import does, decided once for every backend.

use crate::error::{Error, Result};
use crate::id::RunId;
use crate::session::Version;
use crate::transcript::hash::{self, Digest};

use super::Exported;

/// The largest version an import takes: 2^53 - 1, the largest integer a JSON client reads
/// exactly (versions travel as JSON numbers), which leaves every store room for the turns
/// after it (PostgreSQL keeps versions as `bigint`).
pub const MAX_IMPORT_VERSION: u64 = (1 << 53) - 1;

/// What [`SessionStore::import`](crate::SessionStore::import) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Imported {
    /// The conversation had no head; the imported transcript is now its head at this version.
    Written(Version),
    /// The conversation already held this very head (same run, same bytes): nothing was
    /// written. Importing again after a crash or into a copy lands here.
    Unchanged(Version),
}

impl Imported {
    /// The head's version in the store imported into.
    pub fn version(self) -> Version {
        match self {
            Imported::Written(v) | Imported::Unchanged(v) => v,
        }
    }
}

/// The head a store holds for the conversation being imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingHead {
    /// Its version.
    pub version: Version,
    /// The run that wrote it.
    pub run: RunId,
    /// The SHA-256 of its transcript.
    pub digest: Digest,
}

/// What a backend writes for an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportPlan {
    /// Nothing: the head is already this one.
    Unchanged(Version),
    /// Write the head at this version (the exported one): the store never issued it, or
    /// anything above it, for this conversation. The store's next version for the
    /// conversation must then be above it.
    WriteAt(Version),
    /// Write the head at a version issued the store's usual way: the exported one may have
    /// been handed out before (the conversation was cleared or erased here), and a version
    /// is never handed out twice for one conversation.
    WriteFresh,
}

/// Decide an import. `head` is the conversation's head in the target store; `last_issued`
/// is the highest version the store may have issued for the conversation (`None`: none, it
/// has never seen it). Checks, in order, and changes nothing when one fails:
/// 1. the transcript is at most `max_bytes`, else `TooLarge`; the version is
///    `1..=`[`MAX_IMPORT_VERSION`], else `InvalidInput`;
/// 2. a head that is the same run with the same bytes → [`ImportPlan::Unchanged`]; any
///    other head → `Conflict` (an import never overwrites a conversation);
/// 3. no head: the exported version when it is above `last_issued`, else a fresh one.
pub fn plan_import(
    incoming: &Exported,
    head: Option<&ExistingHead>,
    last_issued: Option<Version>,
    max_bytes: usize,
) -> Result<ImportPlan> {
    if incoming.transcript.len() > max_bytes {
        return Err(Error::too_large(format!(
            "{}: a transcript of {} bytes is over this store's limit of {max_bytes}",
            incoming.key,
            incoming.transcript.len()
        )));
    }
    if incoming.version.0 == 0 || incoming.version.0 > MAX_IMPORT_VERSION {
        return Err(Error::invalid(format!(
            "{}: a head's version is between 1 and {MAX_IMPORT_VERSION}, not {}",
            incoming.key, incoming.version.0
        )));
    }
    if let Some(head) = head {
        if head.run == incoming.run && head.digest == incoming.digest() {
            return Ok(ImportPlan::Unchanged(head.version));
        }
        return Err(Error::conflict(format!(
            "{} already has a head ({}, run {}, sha256 {}); an import never overwrites one: \
             erase the conversation first or import it under another id",
            incoming.key,
            head.version,
            head.run,
            hash::hex(&head.digest)
        )));
    }
    Ok(match last_issued {
        Some(last) if incoming.version <= last => ImportPlan::WriteFresh,
        _ => ImportPlan::WriteAt(incoming.version),
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::ErrorKind;
    use crate::id::ConversationKey;

    fn incoming(version: u64, bytes: &'static [u8]) -> Exported {
        Exported::new(
            ConversationKey::parse("acme", "bot", "c1").unwrap(),
            Version(version),
            RunId::new("r1").unwrap(),
            UNIX_EPOCH,
            bytes,
        )
    }

    fn head(of: &Exported, version: u64) -> ExistingHead {
        ExistingHead {
            version: Version(version),
            run: of.run.clone(),
            digest: of.digest(),
        }
    }

    #[test]
    fn a_conversation_never_seen_takes_the_exported_version() {
        let doc = incoming(7, b"abc\n");
        assert_eq!(
            plan_import(&doc, None, None, 100).unwrap(),
            ImportPlan::WriteAt(Version(7))
        );
        assert_eq!(
            plan_import(&doc, None, Some(Version(6)), 100).unwrap(),
            ImportPlan::WriteAt(Version(7))
        );
    }

    #[test]
    fn a_version_the_store_may_have_issued_is_never_reused() {
        let doc = incoming(7, b"abc\n");
        for last in [7, 8, 1000] {
            assert_eq!(
                plan_import(&doc, None, Some(Version(last)), 100).unwrap(),
                ImportPlan::WriteFresh
            );
        }
    }

    #[test]
    fn the_same_head_again_is_unchanged_whatever_its_version_here() {
        let doc = incoming(7, b"abc\n");
        for here in [7, 9] {
            assert_eq!(
                plan_import(&doc, Some(&head(&doc, here)), Some(Version(here)), 100).unwrap(),
                ImportPlan::Unchanged(Version(here))
            );
        }
    }

    #[test]
    fn another_head_is_a_conflict() {
        let doc = incoming(7, b"abc\n");
        let other_bytes = incoming(7, b"abd\n");
        let mut other_run = head(&doc, 7);
        other_run.run = RunId::new("r2").unwrap();
        for existing in [head(&other_bytes, 7), other_run] {
            let err = plan_import(&doc, Some(&existing), None, 100).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        }
    }

    #[test]
    fn too_large_and_versions_out_of_range_are_refused_before_anything_else() {
        let big = incoming(7, b"abcdef\n");
        let err = plan_import(&big, Some(&head(&big, 7)), None, 3).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        for version in [0, MAX_IMPORT_VERSION + 1, u64::MAX] {
            let out_of_range = incoming(version, b"a\n");
            assert_eq!(
                plan_import(&out_of_range, None, None, 100)
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidInput
            );
        }
        let largest = incoming(MAX_IMPORT_VERSION, b"a\n");
        assert_eq!(
            plan_import(&largest, None, None, 100).unwrap(),
            ImportPlan::WriteAt(Version(MAX_IMPORT_VERSION))
        );
    }
}
