//! The one error type of lobu: a kind callers branch on, a message, and the source kept.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// A boxed source error, kept intact so callers can downcast it.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with lobu's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid (an id, a size, a duration, a cursor). Nothing changed.
    InvalidInput,
    /// The thing asked for does not exist (or belongs to another tenant).
    NotFound,
    /// An optimistic check failed: a stale expected version, divergent bytes for one run,
    /// a duplicate that is not a retry. Re-read and decide again.
    Conflict,
    /// The caller's fencing token or claim is no longer the newest: another holder took over.
    /// The write was refused; the caller must stop working on this conversation or run.
    Fenced,
    /// The resource is held by someone else right now; try again later.
    Busy,
    /// A transcript or message exceeds the configured size limit. Nothing was stored.
    TooLarge,
    /// Stored data could not be decoded: a torn file, a broken chain, an unknown format.
    Corrupt,
    /// The backend could not be reached or timed out; retrying may succeed.
    Unavailable,
    /// The run was cancelled (`RunQueue::cancel`): its claim holder must stop and record
    /// the attempt as cancelled; its commit was refused.
    Cancelled,
    /// Anything else; see the source.
    Other,
}

impl ErrorKind {
    /// A short stable name, e.g. `"conflict"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Fenced => "fenced",
            ErrorKind::Busy => "busy",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// lobu's error: a [`ErrorKind`], a human message and, when there is one, the source error.
///
/// Backend crates keep their own error types and convert into this one with `From`,
/// choosing the kind (`io::ErrorKind::NotFound` → [`ErrorKind::NotFound`], a lost
/// connection → [`ErrorKind::Unavailable`], …). The source is never flattened to a string.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Shorthand for [`ErrorKind::Fenced`].
    pub fn fenced(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Fenced, message)
    }

    /// Shorthand for [`ErrorKind::TooLarge`].
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// Shorthand for [`ErrorKind::Corrupt`].
    pub fn corrupt(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Corrupt, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The kind to branch on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error has kind `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::corrupt("invalid JSON").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_kept_not_flattened() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow disk");
        let e = Error::unavailable("reading head").with_source(io);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let src = e.source().expect("source kept");
        let io = src.downcast_ref::<std::io::Error>().expect("downcastable");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "unavailable: reading head");
    }
}
