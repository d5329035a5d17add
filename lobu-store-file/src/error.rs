//! [`FileStoreError`]: what went wrong on disk, and the [`ErrorKind`] callers branch on.

use std::io;
use std::path::{Path, PathBuf};

use lobu_core::ErrorKind;

/// An error of this crate. It converts into [`lobu_core::Error`] with a kind chosen from the
/// failure (a missing file is `NotFound`, a full disk `Unavailable`, a record that does not
/// decode `Corrupt`) and is kept as that error's source, so callers can downcast to it and
/// from it to the [`io::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileStoreError {
    /// A file-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. `"append to"`.
        op: &'static str,
        /// The file or directory it was doing it to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A record on disk does not decode, or contradicts another one.
    #[error("corrupt {}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
        /// The decoder's error, if one failed.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The root directory belongs to a newer or unknown on-disk format.
    #[error("{} holds store format {found:?}; this version reads format {expected}", path.display())]
    UnknownFormat {
        /// The format marker file.
        path: PathBuf,
        /// What the marker says.
        found: String,
        /// The format this version writes.
        expected: u32,
    },
    /// A blocking file task panicked or was cancelled.
    #[error("a file-store task did not finish: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl FileStoreError {
    /// Whether a file or directory it needed was not there.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, FileStoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The kind a caller should branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FileStoreError::Io { source, .. } => io_kind(source.kind()),
            FileStoreError::Corrupt { .. } | FileStoreError::UnknownFormat { .. } => {
                ErrorKind::Corrupt
            }
            FileStoreError::Task(_) => ErrorKind::Other,
        }
    }

    /// `Corrupt` for `path`, without a decoder error.
    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        FileStoreError::Corrupt {
            path: path.to_owned(),
            detail: detail.into(),
            source: None,
        }
    }
}

impl From<FileStoreError> for lobu_core::Error {
    fn from(e: FileStoreError) -> Self {
        lobu_core::Error::new(e.kind(), e.to_string()).with_source(e)
    }
}

/// An [`io::Error`] while doing `op` to `path`, as a closure for `map_err`.
pub(crate) fn io_at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileStoreError {
    let path = path.to_owned();
    move |source| FileStoreError::Io { op, path, source }
}

/// A record at `path` that serde could not decode.
pub(crate) fn undecodable(path: &Path) -> impl FnOnce(serde_json::Error) -> FileStoreError {
    let path = path.to_owned();
    move |source| FileStoreError::Corrupt {
        path,
        detail: "the record does not decode".to_owned(),
        source: Some(source),
    }
}

/// `value` as JSON for the record at `path` (plain records always encode; the error is kept
/// rather than unwrapped all the same).
pub(crate) fn to_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<Vec<u8>, FileStoreError> {
    serde_json::to_vec(value).map_err(|source| FileStoreError::Corrupt {
        path: path.to_owned(),
        detail: "the record does not encode".to_owned(),
        source: Some(source),
    })
}

/// Retryable conditions (a full disk, an interrupted or timed-out call) are `Unavailable`;
/// data the OS says is malformed is `Corrupt`.
fn io_kind(kind: io::ErrorKind) -> ErrorKind {
    use io::ErrorKind as K;
    match kind {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::Conflict,
        K::WouldBlock => ErrorKind::Busy,
        K::InvalidData | K::UnexpectedEof => ErrorKind::Corrupt,
        K::TimedOut
        | K::Interrupted
        | K::StorageFull
        | K::QuotaExceeded
        | K::ResourceBusy
        | K::OutOfMemory => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn io_errors_keep_their_source_and_pick_a_kind() {
        let missing = io::Error::from(io::ErrorKind::NotFound);
        let e: lobu_core::Error = io_at("read", Path::new("/x/state.json"))(missing).into();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let ours = e
            .source()
            .unwrap()
            .downcast_ref::<FileStoreError>()
            .unwrap();
        let io = ours.source().unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        let full = io_at("write", Path::new("/x"))(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn undecodable_records_are_corrupt_with_the_decoder_error() {
        let bad = serde_json::from_str::<u32>("{").unwrap_err();
        let e: lobu_core::Error = undecodable(Path::new("/x/state.json"))(bad).into();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let ours = e
            .source()
            .unwrap()
            .downcast_ref::<FileStoreError>()
            .unwrap();
        assert!(ours.source().unwrap().is::<serde_json::Error>());
    }
}
