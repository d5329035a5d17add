//! [`SessionStore`]: where transcripts live.

use std::fmt::Debug;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::erase::{EraseScope, ErasureReport};
use crate::error::Result;
use crate::export::{Exported, Imported};
use crate::id::{AgentId, ConversationId, ConversationKey, OrgId, RunId};
use crate::lock::Fence;
use crate::retention::IdlePrune;

/// The default transcript size limit: 8 MiB (lobu refused snapshots over 4 MiB and then
/// silently lost every later turn; we refuse with [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) instead).
pub const DEFAULT_MAX_TRANSCRIPT_BYTES: usize = 8 * 1024 * 1024;

/// The largest page a listing returns.
pub const MAX_PAGE_LIMIT: usize = 200;

/// A snapshot's version: a per-conversation sequence that only grows. A store never hands
/// out the same version twice for one conversation, not even after [`SessionStore::clear`],
/// so "I hold version v" is a safe cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version(pub u64);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// How a run ended. Only [`TerminalStatus::Completed`] snapshots become the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TerminalStatus {
    /// The turn finished; its transcript is the new head.
    Completed,
    /// The agent returned an error.
    Failed,
    /// The turn ran past its time limit.
    Timeout,
    /// The turn was cancelled (shutdown, reset, caller).
    Cancelled,
}

impl TerminalStatus {
    /// `completed`, `failed`, `timeout` or `cancelled` (lobu's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalStatus::Completed => "completed",
            TerminalStatus::Failed => "failed",
            TerminalStatus::Timeout => "timeout",
            TerminalStatus::Cancelled => "cancelled",
        }
    }

    /// Parse lobu's spelling; anything else is `InvalidInput`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "completed" => TerminalStatus::Completed,
            "failed" => TerminalStatus::Failed,
            "timeout" => TerminalStatus::Timeout,
            "cancelled" => TerminalStatus::Cancelled,
            other => {
                return Err(crate::Error::invalid(format!(
                    "unknown terminal status {other:?}"
                )));
            }
        })
    }
}

/// The head of a conversation as hydrate returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The version of this snapshot (pass it back as `expected` when persisting the next turn).
    pub version: Version,
    /// The run that wrote it.
    pub run: RunId,
    /// The whole transcript, byte for byte as persisted.
    pub transcript: Bytes,
}

/// One write of a run's transcript.
#[derive(Debug, Clone)]
pub struct Persist {
    /// The run whose transcript this is.
    pub run: RunId,
    /// How the run ended.
    pub status: TerminalStatus,
    /// The whole transcript after the run; with [`base_len`](Persist::base_len), only the
    /// bytes it appended.
    pub transcript: Bytes,
    /// The head version this run started from (`None`: the conversation had no head).
    pub expected: Option<Version>,
    /// The fence of the writer's claim (or lease) of the conversation.
    pub fence: Fence,
    /// `Some(n)`: an append. The transcript is the first `n` bytes of version `expected`
    /// followed by `transcript` (a writer that only appended knows `n`: the length of the
    /// head it read). The store checks it by version, without reading or hashing the base,
    /// so the write costs the new bytes, not the history's: `n` past the end of `expected` is
    /// `InvalidInput`, an `expected` that is no longer in the head is `Conflict`, and the
    /// rest is decided as for the whole transcript it stands for.
    pub base_len: Option<usize>,
}

impl Persist {
    /// How many bytes the transcript is: the base and the appended bytes of an append.
    pub fn len(&self) -> usize {
        self.base_len
            .unwrap_or(0)
            .saturating_add(self.transcript.len())
    }

    /// Whether the transcript is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One conversation in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// The conversation id.
    pub conversation: ConversationId,
    /// The head version.
    pub version: Version,
    /// How many completed snapshots (turns) the conversation has.
    pub turns: u64,
    /// The head transcript's size in bytes.
    pub bytes: u64,
    /// A title from the first user text (see [`crate::transcript::title`]), if any.
    pub title: Option<String>,
    /// When the head was written.
    #[serde(with = "crate::time_serde")]
    pub updated_at: SystemTime,
}

/// A page of a cursor-paged listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Pass this back as the cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What [`SessionStore::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Whole conversations removed because they were idle since before the cutoff.
    pub conversations: u64,
    /// Snapshots removed (of those conversations, plus old non-completed forensic copies).
    pub snapshots: u64,
}

/// Check a listing limit: `1..=200`.
pub fn check_page_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(crate::Error::invalid(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}

/// Where transcripts live.
///
/// # Contract
///
/// * [`hydrate`](Self::hydrate) returns the latest **completed** snapshot (the head) with its
///   version, or `None` for a conversation that has none (never written, or cleared).
///   Non-completed snapshots are never returned.
/// * [`persist`](Self::persist) checks, in this order, and changes nothing when a check fails:
///   1. the transcript is at most [`max_transcript_bytes`](Self::max_transcript_bytes), else
///      `TooLarge`;
///   2. `fence` is the newest fence issued for this conversation (by a
///      [`RunQueue::claim`](crate::RunQueue::claim) or a
///      [`ConversationLocks`](crate::ConversationLocks) lease), else `Fenced` (a zombie writer
///      whose claim was taken over cannot write, and neither can a writer whose fence was
///      never issued: one larger than the newest, or any fence while none was ever issued);
///   3. a snapshot for the same run already exists: same status and same bytes → success,
///      returning its version (a retry); bytes that strictly extend the stored ones while that
///      snapshot is still the head → a new head version; anything else → `Conflict`.
///      Only a *completed* snapshot of the run can cause that conflict: non-completed ones
///      are earlier attempts kept for forensics, so a later attempt of the same run (a retry
///      after a failure or timeout) is checked as a new write;
///   4. for a completed write, `expected` equals the current head version (`None` when there
///      is no head), else `Conflict`.
///
///   A completed write becomes the new head. Other statuses are kept for forensics and never
///   hydrated; they do not check `expected` and do not move the head. Bytes are stored
///   exactly: no re-serialisation, no truncation. A write that extends the head costs in
///   proportion to the new bytes, not the whole transcript.
/// * [`clear`](Self::clear) removes every snapshot of one conversation (all statuses) and
///   returns how many; it is fenced like a write (a stale fence is `Fenced` and removes
///   nothing), idempotent (a second call returns 0) and leaves every other conversation
///   untouched. Versions and fences are not reused after a clear.
/// * [`prune`](Self::prune) never touches a conversation with a live owner (a claimed run or
///   a live lease).
/// * Every method is scoped by the full [`ConversationKey`] or by an [`OrgId`]: nothing reads,
///   writes or deletes across orgs.
/// * Implementations are safe to call concurrently, from many tasks and (for durable
///   backends) many processes: of two concurrent completed writes with the same `expected`,
///   exactly one wins and the other gets `Conflict` (or `Fenced`).
#[async_trait]
pub trait SessionStore: Debug + Send + Sync + 'static {
    /// The latest completed snapshot, or `None`.
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>>;

    /// The head version only: a cheap check that lets a worker holding a cached copy skip
    /// the read.
    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>>;

    /// Write a run's transcript; see the trait docs for the checks. Returns the version of
    /// the stored snapshot.
    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version>;

    /// Remove every snapshot of the conversation under `fence` (the newest claim's or
    /// lease's); returns how many were removed.
    async fn clear(&self, key: &ConversationKey, fence: Fence) -> Result<u64>;

    /// The org's conversations of one agent that have a head, ordered by conversation id.
    /// `cursor` is a `next_cursor` from an earlier page (an unknown cursor starts after its
    /// text, so paging stays stable while conversations are added). `limit` is `1..=200`.
    async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>>;

    /// Retention that does not depend on run history: remove whole conversations whose head
    /// was last written before `idle_before` and that have no live owner, and non-completed
    /// snapshots older than it ([`IdlePrune::everything_before`]; see
    /// [`prune_with`](Self::prune_with)).
    async fn prune(&self, idle_before: SystemTime) -> Result<PruneReport> {
        self.prune_with(&IdlePrune::everything_before(idle_before))
            .await
    }

    /// Remove what `prune` takes ([`IdlePrune::takes_conversation`] for conversations
    /// without a live owner, [`IdlePrune::takes_forensic`] for forensic copies), at most
    /// [`limit`](IdlePrune::limit) conversations and as many forensic copies, and report it;
    /// with [`dry_run`](IdlePrune::dry_run), report the same counts and remove nothing. A
    /// conversation removed whole counts all its snapshots. A bad limit is `InvalidInput`.
    async fn prune_with(&self, prune: &IdlePrune) -> Result<PruneReport>;

    /// Remove every trace of the scope's conversations: their snapshots (completed and
    /// forensic), head and version counters, leases and fences, and, where this store also
    /// holds the run queue (every backend here), their runs whatever their status, with
    /// their idempotency keys and events. Afterwards no call finds any of it (`hydrate` and
    /// `status` are `None`, `list` skips it, a used idempotency key makes a new run) and the
    /// store's files or tables hold none of its ids or bytes. Other conversations are left
    /// exactly as they were. Erasing what does not exist is an empty report.
    ///
    /// A claim or lease taken before the erasure is refused afterwards (`NotFound` for a
    /// claim, `Fenced` for a lease): do not erase a conversation a host is writing to on its
    /// own. Fences start again for a conversation used after its erasure.
    async fn erase(&self, scope: &EraseScope) -> Result<ErasureReport>;

    /// Every conversation that has a head, across **all orgs**, ordered by org, agent and
    /// conversation id: for operators copying or auditing a whole store (`lobu migrate`),
    /// never for serving a tenant. `cursor` is a `next_cursor` from an earlier page (see
    /// [`scan_cursor`]); `limit` is `1..=200`.
    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<ConversationKey>>;

    /// The conversation's head with its run, version and write time, or `None` when it has
    /// no head. Bytes are exactly the head's.
    async fn export(&self, key: &ConversationKey) -> Result<Option<Exported>>;

    /// Make an exported conversation's transcript this conversation's head, as
    /// [`plan_import`](crate::export::plan_import) decides (it changes nothing when it
    /// refuses): the same head again is [`Imported::Unchanged`]; a different head is
    /// `Conflict` (an import never overwrites); otherwise the head is written with the
    /// exported run and write time, at the exported version when the store never issued it
    /// or a higher one for this conversation, else at a fresh version. Later versions of
    /// the conversation are above the imported one. The write is atomic: after a crash the
    /// conversation holds the whole head or none.
    async fn import(&self, conversation: &Exported) -> Result<Imported>;

    /// The size limit `persist` enforces.
    fn max_transcript_bytes(&self) -> usize;
}

/// The [`SessionStore::scan`] cursor that resumes after `key`: the three ids as a JSON
/// array (ids may hold any printable text, `/` included).
pub fn scan_cursor(key: &ConversationKey) -> String {
    serde_json::to_string(&(
        key.org.as_str(),
        key.agent.as_str(),
        key.conversation.as_str(),
    ))
    .expect("strings serialise")
}

/// The [`SessionStore::scan`] cursor whose page starts at `org`'s first conversation (no
/// agent id is empty, so every key of the org comes after it).
pub fn scan_cursor_at_org(org: &OrgId) -> String {
    serde_json::to_string(&(org.as_str(), "", "")).expect("strings serialise")
}

/// Where a [`SessionStore::scan`] page starts: after this org, agent and conversation id
/// (a page holds only keys strictly greater, compared in that order, byte by byte).
/// `InvalidInput` when `cursor` is not one [`scan_cursor`] gives.
pub fn parse_scan_cursor(cursor: &str) -> Result<ScanPosition> {
    serde_json::from_str::<(String, String, String)>(cursor)
        .map(|(org, agent, conversation)| ScanPosition {
            org,
            agent,
            conversation,
        })
        .map_err(|e| {
            crate::Error::invalid(format!("{cursor:?} is not a scan cursor")).with_source(e)
        })
}

/// A position in a [`SessionStore::scan`]: the ids a page starts after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScanPosition {
    /// The org id's text.
    pub org: String,
    /// The agent id's text.
    pub agent: String,
    /// The conversation id's text.
    pub conversation: String,
}

impl ScanPosition {
    /// Whether `key` comes after this position.
    pub fn is_before(&self, key: &ConversationKey) -> bool {
        (
            key.org.as_str(),
            key.agent.as_str(),
            key.conversation.as_str(),
        ) > (
            self.org.as_str(),
            self.agent.as_str(),
            self.conversation.as_str(),
        )
    }
}
