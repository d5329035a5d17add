//! `erase`: removing every file that holds an id or a byte of a scope's conversations.
//!
//! Conversation by conversation (those with a directory, and those only runs name), each
//! under its lock, the lock every change of its runs and state takes (see
//! [`crate::queue::files`]): no claim, completion or event append of its runs interleaves.
//! Runs submitted after the erasure listed the runs may survive it, as if submitted after
//! it. Per conversation, in an order chosen so that a crash at any point leaves a store that
//! opens and works, and whose erasure, run again, finds whatever is left and finishes:
//!
//! 1. Its idempotency entries (its whole directory, crashed submits' entries too). They go
//!    before the records, as in `prune_runs`: a retried submit must never take a
//!    record-less entry for a crashed first submit and store a new run under an erased id.
//! 2. The markers of its lane and runs. Markers go before records: a record is how a second
//!    erasure finds a run, a marker alone would not be found again. A crash here leaves
//!    records without markers: runs nobody claims until the erasure finishes, which is what
//!    it is for.
//! 3. Per run, its event log, then its record (the record names the log).
//! 4. A `clear` commit (the state record keeps no head and disowns every forensic copy), the
//!    transcript, history and forensic files, then the state record, then the directory. In
//!    between, the conversation reads as cleared or as never used; a later use starts fresh,
//!    with nothing left that it could take for its own.
//!
//! Finally the scope's directories themselves (strays included) and the parents they empty.
//! Every directory that lost an entry is synced once, at the end (the `clear` commit syncs
//! its own, as `clear` does).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use lobu_core::{AgentId, ConversationKey, EraseScope, ErasureReport, Error, Result, RunId};

use crate::atomic::{list_names, remove_file};
use crate::error::io_at;
use crate::layout::{self, nested};
use crate::queue::files::Queue;
use crate::queue::markers::lane_of;
use crate::retention::wipe;
use crate::state::{Conversation, STATE};
use crate::store::{Inner, Step};

/// What the erasure found of one conversation: its directory (if it has one) and its runs
/// (ids and record paths).
#[derive(Default)]
struct Found {
    dir: Option<PathBuf>,
    runs: Vec<(RunId, PathBuf)>,
}

pub(crate) fn erase(inner: &Inner, scope: &EraseScope) -> Result<ErasureReport> {
    let queue = Queue::new(inner);
    let mut found: BTreeMap<ConversationKey, Found> = BTreeMap::new();
    for (key, dir) in conversations(inner, scope)? {
        found.entry(key).or_default().dir = Some(dir);
    }
    let runs_dir = queue.runs_dir();
    for (text, path) in layout::leaves(&runs_dir).map_err(io_at("list", &runs_dir))? {
        let Ok(run) = RunId::new(&text) else {
            continue;
        };
        // A record that does not decode fails the erasure: it might be the scope's.
        if let Some(file) = queue.load_run_at(&path)?
            && scope.covers(file.key())
        {
            found
                .entry(file.record.key)
                .or_default()
                .runs
                .push((run, path));
        }
    }
    let mut report = ErasureReport::default();
    let mut synced = BTreeSet::new();
    let mut keys = HashSet::new();
    for (key, found) in &found {
        let dir = found
            .dir
            .clone()
            .unwrap_or_else(|| inner.layout.conversation_dir(key));
        let conversation = Conversation::at(inner, key, dir);
        let _lock = conversation.lock_if_present()?;
        let erased = erase_one(&queue, &conversation, &found.runs, &mut report, &mut synced)?;
        if erased {
            keys.insert(key.clone());
        }
    }
    let idempotency = queue.idempotency_dir();
    remove_tree(&scope_dir(&idempotency, scope)?, &idempotency, &mut synced)?;
    let orgs = inner.layout.orgs();
    remove_tree(&scope_dir(&orgs, scope)?, &orgs, &mut synced)?;
    report.conversations = keys.len() as u64;
    for dir in synced.iter().filter(|d| d.is_dir()) {
        inner.disk.sync_dir(dir)?;
    }
    Ok(report)
}

/// Erase one conversation (steps 1 to 4), under its lock; whether it held anything.
fn erase_one(
    queue: &Queue<'_>,
    conversation: &Conversation<'_>,
    runs: &[(RunId, PathBuf)],
    report: &mut ErasureReport,
    synced: &mut BTreeSet<PathBuf>,
) -> Result<bool> {
    let inner = queue.inner;
    let key = conversation.key;
    let idempotency = queue.idempotency_dir();
    let scope = EraseScope::Conversation(key.clone());
    remove_tree(&scope_dir(&idempotency, &scope)?, &idempotency, synced)?;

    let lane = lane_of(key);
    let ids: HashSet<&RunId> = runs.iter().map(|(run, _)| run).collect();
    let active = queue.active_dir();
    for marker in queue.markers()? {
        if marker.lane == lane || ids.contains(&marker.run) {
            queue.remove_marker_with(&marker, crate::atomic::Durability::Recoverable)?;
            synced.insert(active.clone());
        }
    }

    inner.reached(Step::ErasureIndexed)?;
    let (events, runs_dir) = (inner.layout.events(), queue.runs_dir());
    for (run, path) in runs {
        let log = inner.layout.event_log(run);
        if log.exists() {
            report.events += crate::events::erase(inner, run)?;
            remove_empty_parents(&log, &events, synced);
        }
        remove_file(path)?;
        remove_empty_parents(path, &runs_dir, synced);
        report.runs += 1;
    }

    inner.reached(Step::ErasureRunsGone)?;
    let orgs = inner.layout.orgs();
    let snapshots = erase_conversation(conversation, &orgs, synced)?;
    report.snapshots += snapshots.unwrap_or(0);
    Ok(snapshots.is_some() || !runs.is_empty())
}

/// Remove one conversation's files (under its lock, which the caller holds); its
/// snapshots, or `None` when it had no state record (nothing stored: a crashed first lease,
/// or an erasure that stopped after removing it).
fn erase_conversation(
    conversation: &Conversation<'_>,
    orgs: &Path,
    synced: &mut BTreeSet<PathBuf>,
) -> Result<Option<u64>> {
    let mut stored = None;
    if conversation.exists() {
        stored = Some(match conversation.load() {
            Ok(Some(mut state)) => wipe(conversation, &mut state)?,
            Ok(None) => 0,
            // A damaged record is erased all the same; what it counted is unknown.
            Err(e) => {
                tracing::warn!(conversation = %conversation.key, error = %e,
                    "erasing a conversation whose state record does not decode");
                0
            }
        });
        remove_file(&conversation.path(STATE))?;
    }
    remove_tree(&conversation.dir, orgs, synced)?;
    Ok(stored)
}

/// The scope's conversation directories that hold a valid id, with their keys.
fn conversations(inner: &Inner, scope: &EraseScope) -> Result<Vec<(ConversationKey, PathBuf)>> {
    let org = scope.org();
    let agents = match scope {
        EraseScope::Conversation(key) => {
            return Ok(vec![(key.clone(), inner.layout.conversation_dir(key))]);
        }
        EraseScope::Agent(_, agent) => vec![agent.clone()],
        EraseScope::Org(_) => {
            let org_dir = nested(&inner.layout.orgs(), org.as_str());
            let names = list_names(&org_dir)?.into_iter();
            names
                .filter_map(|(name, _)| AgentId::new(layout::decode(&name)?).ok())
                .collect()
        }
        // A scope added to lobu-core after this store: refused before anything is removed
        // (this runs first in `erase`), as erasing a guess at it could remove too much.
        other => return Err(unknown_scope(other)),
    };
    let mut found = Vec::new();
    for agent in agents {
        let dir = inner.layout.agent_dir(org, &agent);
        for (id, path) in layout::conversations(&dir).map_err(io_at("list", &dir))? {
            found.push((ConversationKey::new(org.clone(), agent.clone(), id), path));
        }
    }
    Ok(found)
}

/// `base/<org>[/<agent>[/<conversation>]]`: the layout `orgs/` and `queue/idempotency/`
/// share.
fn scope_dir(base: &Path, scope: &EraseScope) -> Result<PathBuf> {
    let org = nested(base, scope.org().as_str());
    Ok(match scope {
        EraseScope::Org(_) => org,
        EraseScope::Agent(_, agent) => nested(&org, agent.as_str()),
        EraseScope::Conversation(key) => {
            nested(&nested(&org, key.agent.as_str()), key.conversation.as_str())
        }
        other => return Err(unknown_scope(other)),
    })
}

/// The error for an [`EraseScope`] this store does not know (a newer lobu-core's).
fn unknown_scope(scope: &EraseScope) -> Error {
    Error::invalid(format!(
        "this version of lobu-store-file cannot erase {scope:?}; nothing was erased"
    ))
}

/// Remove the tree at `path` (if any) and the directories that leaves empty, up to `top`.
fn remove_tree(path: &Path, top: &Path, synced: &mut BTreeSet<PathBuf>) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => remove_empty_parents(path, top, synced),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at("remove", path)(e).into()),
    }
    Ok(())
}

/// Remove the empty directories above the removed `path`, up to (not including) `top`: a
/// long id's continuation levels, an agent or org with nothing left. Notes the directory
/// where the climb stopped for syncing.
fn remove_empty_parents(path: &Path, top: &Path, synced: &mut BTreeSet<PathBuf>) {
    let mut dir = path.parent();
    while let Some(at) = dir.filter(|d| d.starts_with(top) && *d != top) {
        // Fails (and stops the climb) once a directory still holds other entries.
        if fs::remove_dir(at).is_err() {
            break;
        }
        dir = at.parent();
    }
    synced.insert(dir.unwrap_or(top).to_owned());
}
