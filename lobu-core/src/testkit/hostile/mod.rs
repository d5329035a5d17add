//! Hostile input against a store: every refused call changes nothing, byte for byte.
//!
//! The clauses here run through a backend's public API, like the conformance clauses, but
//! they also compare **the store's own bytes** before and after each refused call. A backend
//! crate provides those bytes with a [`StoreDump`]: a recursive snapshot of a data
//! directory's file names and contents ([`FilesUnder`]), the rows of its tables in a fixed
//! order, or nothing ([`ApiOnly`], for the memory backend, where what the API reads back is
//! all there is). Every clause adds what the API reads back (heads, listings, runs) to the
//! dump, so a refused call that changed a head is caught on every backend.
//!
//! * [`hostile_transcripts_are_refused_whole_or_kept_byte_for_byte`]: a 100 MB line, one
//!   byte over the limit, invalid UTF-8, a torn last line, deeply nested JSON, a header only,
//!   an empty transcript.
//! * [`stale_future_and_foreign_versions_and_fences_change_nothing`]: versions and fences
//!   that are stale, from the future, or from another conversation or org, on persist,
//!   clear, renew and every claim-fenced queue call.
//! * [`confusable_ids_are_distinct_conversations_that_share_nothing`]: ids differing only by
//!   case, by characters a naive sanitiser folds together, by Unicode normalisation or by
//!   path syntax (`..`, `/`, `\`, `%2F`, `%`).
//!
//! Clauses make their own random org ids, so they may share a backend with anything else.
//!
//! ```no_run
//! use lobu_core::memory::MemoryBackend;
//! use lobu_core::testkit::{Capabilities, hostile};
//!
//! # async fn demo() {
//! let backend = MemoryBackend::new().with_max_transcript_bytes(1 << 20).into_backend();
//! let dump = hostile::ApiOnly;
//! hostile::hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(
//!     &backend,
//!     &dump,
//!     &Capabilities::default(),
//! )
//! .await;
//! # }
//! ```

mod fences;
mod ids;
mod transcripts;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::Backend;
use crate::error::{ErrorKind, Result};
use crate::id::{AgentId, ConversationKey, OrgId, RunId};

pub use fences::stale_future_and_foreign_versions_and_fences_change_nothing;
pub use ids::{
    CONFUSABLE_CONVERSATION_IDS, confusable_ids_are_distinct_conversations_that_share_nothing,
};
pub use transcripts::{
    HUNDRED_MB, hostile_transcripts_are_refused_whole_or_kept_byte_for_byte, hundred_mb_line,
};

/// A store's state as named byte strings: file paths and contents, or table rows keyed by
/// their primary key. Ordered, so two snapshots compare (and print) deterministically.
pub type StoreBytes = BTreeMap<String, Vec<u8>>;

/// Where a clause reads a store's own bytes from.
#[async_trait]
pub trait StoreDump: Send + Sync {
    /// Everything the store keeps, now.
    async fn dump(&self) -> StoreBytes;
}

/// No bytes beyond what the API reads back (the memory backend).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiOnly;

#[async_trait]
impl StoreDump for ApiOnly {
    async fn dump(&self) -> StoreBytes {
        StoreBytes::new()
    }
}

/// Every file under a directory, recursively, by its path relative to it.
#[derive(Debug, Clone)]
pub struct FilesUnder(pub PathBuf);

#[async_trait]
impl StoreDump for FilesUnder {
    async fn dump(&self) -> StoreBytes {
        files_under(&self.0)
    }
}

/// Every file under `root` (recursively) with its contents, keyed by its path relative to
/// `root`; a directory is an entry of its own (empty contents, name ending in `/`), so a
/// created or removed empty directory counts as a change too. A missing root is empty.
pub fn files_under(root: &Path) -> StoreBytes {
    fn walk(dir: &Path, root: &Path, out: &mut StoreBytes) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => panic!("reading {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                walk(&path, root, out);
            } else {
                // A file removed between listing and reading is a change the next dump shows.
                if let Ok(bytes) = std::fs::read(&path) {
                    out.insert(name, bytes);
                }
            }
        }
    }
    let mut out = StoreBytes::new();
    walk(root, root, &mut out);
    out
}

/// Panic, naming every entry added, removed or changed, unless `after` equals `before`.
pub fn assert_unchanged(before: &StoreBytes, after: &StoreBytes, what: &str) {
    if before == after {
        return;
    }
    let mut diff = String::new();
    for (name, bytes) in after {
        match before.get(name) {
            None => writeln!(diff, "  added   {name} ({} bytes)", bytes.len()),
            Some(old) if old != bytes => writeln!(
                diff,
                "  changed {name}: {:?} -> {:?}",
                shown(old),
                shown(bytes)
            ),
            Some(_) => Ok(()),
        }
        .expect("writing to a string");
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        writeln!(diff, "  removed {name}").expect("writing to a string");
    }
    panic!("{what} changed the store:\n{diff}");
}

/// Panic unless every entry of `before` is in `after` with the same bytes (entries may be
/// added): a write to one conversation touched nothing that already existed for another.
pub fn assert_only_added(before: &StoreBytes, after: &StoreBytes, what: &str) {
    let kept: StoreBytes = after
        .iter()
        .filter(|(name, _)| before.contains_key(*name))
        .map(|(name, bytes)| (name.clone(), bytes.clone()))
        .collect();
    assert_unchanged(before, &kept, what);
}

fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned();
    if bytes.len() > 160 {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// What a clause watches: the store's bytes plus what the API reads back for its keys.
pub(crate) struct Watched<'a> {
    backend: &'a Backend,
    dump: &'a dyn StoreDump,
    keys: Vec<ConversationKey>,
    runs: Vec<(OrgId, RunId)>,
}

impl<'a> Watched<'a> {
    pub(crate) fn new(backend: &'a Backend, dump: &'a dyn StoreDump) -> Self {
        Watched {
            backend,
            dump,
            keys: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub(crate) fn key(&mut self, key: &ConversationKey) {
        if !self.keys.contains(key) {
            self.keys.push(key.clone());
        }
    }

    pub(crate) fn run(&mut self, org: &OrgId, run: &RunId) {
        self.runs.push((org.clone(), run.clone()));
    }

    /// The store's bytes, then each watched key's head and listing and each run's record.
    pub(crate) async fn state(&self) -> StoreBytes {
        let mut state = self.dump.dump().await;
        let mut listed: Vec<(&OrgId, &AgentId)> = Vec::new();
        for key in &self.keys {
            let head = self.backend.sessions.hydrate(key).await.expect("hydrate");
            let shown = head.map_or_else(Vec::new, |s| {
                let mut bytes = format!("{} {} ", s.version, s.run).into_bytes();
                bytes.extend_from_slice(&s.transcript);
                bytes
            });
            state.insert(format!("api: head of {key}"), shown);
            if !listed.contains(&(&key.org, &key.agent)) {
                listed.push((&key.org, &key.agent));
            }
        }
        for (org, agent) in listed {
            let page = self.backend.sessions.list(org, agent, None, 200).await;
            let items = page.expect("list").items;
            let shown = format!(
                "{:?}",
                items
                    .iter()
                    .map(|s| (&s.conversation, s.version, s.turns, s.bytes))
                    .collect::<Vec<_>>()
            );
            state.insert(format!("api: list of {org}/{agent}"), shown.into_bytes());
        }
        for (org, run) in &self.runs {
            let record = self.backend.queue.status(org, run).await.expect("status");
            let shown = record.map_or_else(String::new, |r| {
                format!(
                    "{:?} attempts={} error={:?} output={:?}",
                    r.status, r.attempts, r.error, r.output
                )
            });
            state.insert(format!("api: run {run} of {org}"), shown.into_bytes());
        }
        state
    }

    /// Assert `result` failed with `kind` and the state is still `before`.
    pub(crate) async fn refused<T: std::fmt::Debug>(
        &self,
        before: &StoreBytes,
        result: Result<T>,
        kind: ErrorKind,
        what: &str,
    ) {
        self.refused_as(before, result, &[kind], what).await;
    }

    /// Assert `result` failed with one of `kinds` and the state is still `before`.
    pub(crate) async fn refused_as<T: std::fmt::Debug>(
        &self,
        before: &StoreBytes,
        result: Result<T>,
        kinds: &[ErrorKind],
        what: &str,
    ) {
        match result {
            Ok(value) => panic!("{what}: expected one of {kinds:?}, got Ok({value:?})"),
            Err(error) => assert!(kinds.contains(&error.kind()), "{what}: {error}"),
        }
        assert_unchanged(before, &self.state().await, what);
    }
}
