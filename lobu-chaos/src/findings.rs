//! What the checks found, by the counter each finding goes to in the last line.

/// Findings of one or more checks; each entry says what was wrong, and where.
#[derive(Debug, Default, Clone)]
pub(crate) struct Findings {
    /// An accepted turn that never ended, or a completed turn missing from its transcript.
    pub(crate) lost: Vec<String>,
    /// A turn that ran or was stored more than once.
    pub(crate) duplicated: Vec<String>,
    /// Anything torn, malformed, out of order, from another org, of a failed turn, from
    /// before a reset, or written under a stale fence.
    pub(crate) corrupt: Vec<String>,
    /// Two turns of one conversation that ran at the same time.
    pub(crate) overlaps: Vec<String>,
    /// Other failed expectations (readiness during database faults, harness trouble).
    pub(crate) other: Vec<String>,
}

impl Findings {
    pub(crate) fn absorb(&mut self, other: Findings) {
        self.lost.extend(other.lost);
        self.duplicated.extend(other.duplicated);
        self.corrupt.extend(other.corrupt);
        self.overlaps.extend(other.overlaps);
        self.other.extend(other.other);
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.corrupt.is_empty()
            && self.overlaps.is_empty()
            && self.other.is_empty()
    }

    /// Every finding, one per line, with its counter's name (at most `limit` per counter).
    pub(crate) fn lines(&self, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (name, list) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("corrupt", &self.corrupt),
            ("overlap", &self.overlaps),
            ("failed check", &self.other),
        ] {
            for finding in list.iter().take(limit) {
                out.push(format!("{name}: {finding}"));
            }
            if list.len() > limit {
                out.push(format!("{name}: … and {} more", list.len() - limit));
            }
        }
        out
    }
}
