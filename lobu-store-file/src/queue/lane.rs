//! A conversation's lane as the multitask rules see it: its unfinished runs, oldest first,
//! read from its lane's markers and their records. Only the strategies and commits that need
//! it read it (under the conversation's lock, so it cannot change meanwhile), and most read only its
//! first few runs.

use lobu_core::{ConversationKey, Result};

use super::files::Queue;
use super::markers::{Marker, lane_of};
use super::runs::RunFile;

impl Queue<'_> {
    /// The conversation's first `limit` unfinished runs, oldest first.
    pub(crate) fn lane(&self, key: &ConversationKey, limit: usize) -> Result<Vec<RunFile>> {
        self.lane_in(&self.markers()?, key, limit)
    }

    /// [`lane`](Self::lane) from the markers the caller listed already.
    pub(crate) fn lane_in(
        &self,
        markers: &[Marker],
        key: &ConversationKey,
        limit: usize,
    ) -> Result<Vec<RunFile>> {
        let mut files = Vec::new();
        for marker in of_lane(markers, &lane_of(key)) {
            if files.len() >= limit {
                break;
            }
            // A marker a crash left behind (no record, or a finished run's) is no run; two
            // keys sharing a lane (a 128-bit collision) share no runs.
            if let Some(file) = self.load_run(&marker.run)?
                && file.seq == marker.seq
                && file.key() == key
                && !file.record.status.is_terminal()
            {
                files.push(file);
            }
        }
        Ok(files)
    }
}

/// The markers of `lane`, oldest first.
pub(crate) fn of_lane<'m>(markers: &'m [Marker], lane: &str) -> Vec<&'m Marker> {
    let mut mine: Vec<&Marker> = markers.iter().filter(|m| m.lane == lane).collect();
    mine.sort_by(|a, b| (a.seq, &a.run).cmp(&(b.seq, &b.run)));
    mine
}
