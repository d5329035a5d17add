//! Submission order: the sequence number each new run's marker carries, strictly increasing
//! across the store's processes, drawn without listing the markers.
//!
//! `queue/seq` holds the last number drawn (8 bytes, little-endian), read and written under
//! the queue lock and never synced: after a power loss it may be behind numbers that markers
//! synced since carry. So each process also lists the markers once, on its first draw, and
//! never draws at or below the largest number they carry (every process of the store
//! restarts after a power loss, and so lists them again).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use lobu_core::Result;

use super::files::Queue;
use crate::error::io_at;

/// The next sequence number. The caller holds the queue lock.
pub(super) fn draw(queue: &Queue<'_>) -> Result<u64> {
    let floor = floor(queue)?;
    let path = queue.sequence_path();
    let mut file = open_counters(&path)?;
    let next = last(&mut file).max(floor) + 1;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&next.to_le_bytes()))
        .map_err(io_at("write", &path))?;
    Ok(next)
}

/// `queue/seq`, created if missing: the last sequence number drawn, then the markers'
/// generation (see [`super::index`]).
pub(super) fn open_counters(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at("open", path))?;
    Ok(file)
}

/// The last number drawn, 0 if none (or the file was torn: the floor covers it).
fn last(file: &mut File) -> u64 {
    let mut bytes = [0u8; 8];
    match file.read_exact(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// The largest number the markers carried when this process first drew one.
fn floor(queue: &Queue<'_>) -> Result<u64> {
    let mut floor = queue
        .inner
        .sequence_floor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(floor) = *floor {
        return Ok(floor);
    }
    let found = queue.markers()?.iter().map(|m| m.seq).max().unwrap_or(0);
    *floor = Some(found);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use lobu_core::{ConversationKey, NewRun};
    use serde_json::json;

    use super::super::{files::Queue, intake};
    use crate::store::FileStore;

    #[tokio::test]
    async fn numbers_keep_rising_across_processes_and_a_lost_counter() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let seqs = |store: &FileStore| {
            let queue = Queue::new(&store.inner);
            let mut seqs: Vec<u64> = queue.markers().unwrap().iter().map(|m| m.seq).collect();
            seqs.sort_unstable();
            seqs
        };
        let one = FileStore::open(dir.path()).await.unwrap();
        let two = FileStore::open(dir.path()).await.unwrap();
        for store in [&one, &two, &one] {
            intake::submit(&store.inner, NewRun::turn(key.clone(), json!({}))).unwrap();
        }
        assert_eq!(seqs(&one), [1, 2, 3], "two processes draw in turn");
        // A power loss took the counter's last writes: a process started after it still
        // draws above every marker.
        std::fs::write(dir.path().join("queue/seq"), 1u64.to_le_bytes()).unwrap();
        let three = FileStore::open(dir.path()).await.unwrap();
        intake::submit(&three.inner, NewRun::turn(key.clone(), json!({}))).unwrap();
        assert_eq!(seqs(&three), [1, 2, 3, 4]);
    }
}
