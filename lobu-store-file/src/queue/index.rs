//! This process's copy of the markers, so that a claim does not list and parse every marker
//! of the queue each time (a claim is the one step of a turn that runs one at a time per
//! runtime, and the listing grew with the queue: ~1 µs per marker).
//!
//! The copy is exact under the queue lock as long as nobody else changed a marker since this
//! process last looked: every change of a marker's name, by any process, first adds one to
//! a generation number (in `queue/seq`, after the sequence number; never synced: after a
//! power loss every process starts with no copy). A claim reads the number; if it is the
//! one this process's copy was made at (or brought to by its own changes), the copy is the
//! directory; otherwise the markers are listed again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use lobu_core::Result;

use super::files::Queue;
use super::markers::{self, Lanes, Marker};
use crate::error::io_at;

/// The copy, with the generation it is exact at (`None`: no copy).
#[derive(Debug, Default)]
pub(crate) struct MarkerIndex {
    generation: Option<u64>,
    lanes: Lanes,
    counters: Option<File>,
    /// How often the markers were listed again.
    #[cfg(test)]
    rebuilds: u32,
}

/// A change of the markers' names, as the copy applies it.
pub(crate) enum Edit {
    Insert(Marker),
    Remove(Marker),
}

impl MarkerIndex {
    /// Bring the copy up to date (the caller holds the queue lock); the lanes.
    pub(super) fn current(&mut self, queue: &Queue<'_>) -> Result<&Lanes> {
        let now = self.read_generation(queue)?;
        if self.generation != Some(now) {
            self.lanes = markers::lanes(queue.markers()?);
            self.generation = Some(now);
            #[cfg(test)]
            {
                self.rebuilds += 1;
            }
        }
        Ok(&self.lanes)
    }

    /// Whether the copy still holds `marker` (a claim that moved its run on removed it).
    pub(super) fn still_has(&self, marker: &Marker) -> bool {
        self.generation.is_some()
            && self
                .lanes
                .get(&marker.lane)
                .is_some_and(|lane| lane.contains_key(&(marker.seq, marker.run.clone())))
    }

    /// Before a change of the markers (under the queue lock): announce it to every process.
    /// Whether this copy was exact before it (so the change's edits keep it exact).
    pub(super) fn begin_change(&mut self, queue: &Queue<'_>) -> Result<bool> {
        let now = self.read_generation(queue)?;
        let exact = self.generation == Some(now);
        self.write_generation(queue, now + 1)?;
        self.generation = exact.then_some(now + 1);
        Ok(exact)
    }

    /// After the change: apply its edits, or drop the copy (the change failed, or the copy
    /// was not exact).
    pub(super) fn end_change(&mut self, exact: bool, edits: Option<Vec<Edit>>) {
        match edits.filter(|_| exact) {
            Some(edits) => {
                for edit in edits {
                    match edit {
                        Edit::Insert(marker) => markers::insert(&mut self.lanes, marker),
                        Edit::Remove(marker) => markers::forget(&mut self.lanes, &marker),
                    }
                }
            }
            None => self.generation = None,
        }
    }

    fn counters(&mut self, queue: &Queue<'_>) -> Result<&mut File> {
        if self.counters.is_none() {
            self.counters = Some(super::sequence::open_counters(&queue.sequence_path())?);
        }
        Ok(self.counters.as_mut().expect("just opened"))
    }

    fn read_generation(&mut self, queue: &Queue<'_>) -> Result<u64> {
        let file = self.counters(queue)?;
        let mut bytes = [0u8; 8];
        let read = file
            .seek(SeekFrom::Start(8))
            .and_then(|_| file.read_exact(&mut bytes));
        // Missing (a store that never changed a marker, or a power loss): 0.
        Ok(read.map_or(0, |()| u64::from_le_bytes(bytes)))
    }

    fn write_generation(&mut self, queue: &Queue<'_>, generation: u64) -> Result<()> {
        let path = queue.sequence_path();
        // After the sequence number's 8 bytes; a file holding none yet reads zeros there,
        // "none drawn" (the draw's floor still holds).
        let file = self.counters(queue)?;
        file.seek(SeekFrom::Start(8))
            .and_then(|_| file.write_all(&generation.to_le_bytes()))
            .map_err(io_at("write", &path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lobu_core::{ConversationKey, NewRun, RunId, WorkerId};
    use serde_json::json;

    use super::super::{claim, intake};
    use crate::store::FileStore;

    const LEASE: Duration = Duration::from_secs(60);

    fn submit(store: &FileStore, conversation: &str) -> RunId {
        let key = ConversationKey::parse("acme", "bot", conversation).unwrap();
        let run = NewRun::turn(key, json!({}));
        intake::submit(&store.inner, run).unwrap().0.run
    }

    #[tokio::test]
    async fn claims_list_the_markers_again_only_after_another_process_changed_them() {
        let dir = tempfile::tempdir().unwrap();
        let here = FileStore::open(dir.path()).await.unwrap();
        let there = FileStore::open(dir.path()).await.unwrap();
        let worker = WorkerId::new("w1").unwrap();
        let claim = |store: &FileStore| claim::claim(&store.inner, &worker, LEASE).unwrap();
        let rebuilds = |store: &FileStore| store.inner.marker_index.lock().unwrap().rebuilds;
        let ours: Vec<RunId> = ["a", "b", "c"].map(|c| submit(&here, c)).into();
        for run in &ours {
            assert_eq!(claim(&here).unwrap().run, *run);
        }
        assert!(claim(&here).is_none());
        assert_eq!(rebuilds(&here), 1, "its own changes kept its copy exact");
        let theirs = submit(&there, "d");
        assert_eq!(
            claim(&here).map(|c| c.run),
            Some(theirs),
            "another process's marker is seen"
        );
        assert_eq!(rebuilds(&here), 2);
    }
}
