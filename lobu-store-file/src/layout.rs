//! Where things live: a reversible, collision-free mapping from ids to paths.
//!
//! An id is percent-encoded byte by byte: `[A-Za-z0-9_-]` stay as they are, every other byte
//! becomes `%XX` (upper-case hex), so `a:b` is `a%3Ab`, `a_b` stays `a_b`, `x/../y` is
//! `x%2F%2E%2E%2Fy` and `.` is `%2E`. The encoding is injective and has exactly one spelling
//! per id, so two ids never share a path, and no encoded name is `.`, `..` or hidden.
//!
//! A name can be three times its id (a 512-byte conversation id up to 1536 bytes), more than
//! a file name holds (255 bytes). Long names are split into [`CHUNK`]-byte directory levels:
//! every level but the last is exactly `CHUNK` bytes plus a `+` (a byte the encoding never
//! produces), the last level has no `+`. The split is unique, and a leaf can never be
//! mistaken for a continuation.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use lobu_core::{AgentId, ConversationId, ConversationKey, OrgId, RunId};

/// The most bytes of an encoded name in one path component (leaves ≤ this, continuations
/// exactly this plus `+`).
pub(crate) const CHUNK: usize = 200;
const CONTINUED: char = '+';

/// The directory holding every org's conversations.
pub(crate) const ORGS: &str = "orgs";
/// The directory holding the run queue.
pub(crate) const QUEUE: &str = "queue";
/// The directory holding the runs' event logs.
pub(crate) const EVENTS: &str = "events";

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Percent-encode `text` (see the module docs).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if is_plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of a canonical encoding; `None` for anything [`encode`] would not produce.
pub(crate) fn decode(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b);
            i += 1;
        } else if b == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            let upper = hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h));
            let value = u8::from_str_radix(hex, 16).ok().filter(|_| upper)?;
            if is_plain(value) {
                return None; // `%41` for `A` is a second spelling: not ours.
            }
            out.push(value);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The path components of `text`: its encoding split into levels.
pub(crate) fn components(text: &str) -> Vec<String> {
    let encoded = encode(text);
    let mut parts = Vec::with_capacity(encoded.len() / CHUNK + 1);
    let mut rest = encoded.as_str();
    while rest.len() > CHUNK {
        // The encoding is ASCII, so any byte offset is a char boundary.
        let (head, tail) = rest.split_at(CHUNK);
        parts.push(format!("{head}{CONTINUED}"));
        rest = tail;
    }
    parts.push(rest.to_owned());
    parts
}

/// `base` joined with the components of `text`.
pub(crate) fn nested(base: &Path, text: &str) -> PathBuf {
    let mut path = base.to_owned();
    path.extend(components(text));
    path
}

/// Paths of one store root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/orgs`: the org is always the first level below it.
    pub(crate) fn orgs(&self) -> PathBuf {
        self.root.join(ORGS)
    }

    pub(crate) fn agent_dir(&self, org: &OrgId, agent: &AgentId) -> PathBuf {
        nested(&nested(&self.orgs(), org.as_str()), agent.as_str())
    }

    /// `<root>/orgs/<org>/<agent>/<conversation>`: one directory per conversation.
    pub(crate) fn conversation_dir(&self, key: &ConversationKey) -> PathBuf {
        nested(
            &self.agent_dir(&key.org, &key.agent),
            key.conversation.as_str(),
        )
    }

    pub(crate) fn queue(&self) -> PathBuf {
        self.root.join(QUEUE)
    }

    /// `<root>/queue/runs`: one record per run, named by its run id.
    pub(crate) fn run_records(&self) -> PathBuf {
        self.queue().join("runs")
    }

    /// `<root>/events`: one event log per run that recorded events, named by its run id.
    pub(crate) fn events(&self) -> PathBuf {
        self.root.join(EVENTS)
    }

    /// `<root>/events/<run>`: the run's event log.
    pub(crate) fn event_log(&self, run: &RunId) -> PathBuf {
        nested(&self.events(), run.as_str())
    }
}

/// The id whose [`nested`] path below some base is `relative`; `None` for any other path
/// (a continuation directory itself, a staging file, a stray name).
pub(crate) fn id_of(relative: &Path) -> Option<String> {
    let mut text = String::new();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        let name = part.as_os_str().to_str()?;
        if parts.peek().is_some() {
            let chunk = name.strip_suffix(CONTINUED).filter(|c| c.len() == CHUNK)?;
            text.push_str(chunk);
        } else if name.len() <= CHUNK {
            text.push_str(name);
        } else {
            return None;
        }
    }
    decode(&text)
}

/// Every id encoded below `dir` by [`nested`], with its leaf path, in no particular order.
/// Entries that are not canonical encodings (a stray file, a temporary file) are skipped;
/// a missing `dir` has none.
pub(crate) fn leaves(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    walk(dir, "", &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(chunk) = name.strip_suffix(CONTINUED) {
            if chunk.len() == CHUNK && chunk.bytes().all(|b| is_plain(b) || b == b'%') {
                walk(&entry.path(), &format!("{prefix}{chunk}"), found)?;
            }
        } else if !name.is_empty()
            && name.len() <= CHUNK
            && let Some(text) = decode(&format!("{prefix}{name}"))
        {
            found.push((text, entry.path()));
        }
    }
    Ok(())
}

/// The conversations of one agent directory, parsed; ids that do not validate are skipped.
pub(crate) fn conversations(agent_dir: &Path) -> io::Result<Vec<(ConversationId, PathBuf)>> {
    let found = leaves(agent_dir)?;
    let parsed = found.into_iter().filter_map(|(text, path)| {
        let id = ConversationId::new(&text).ok()?;
        Some((id, path))
    });
    Ok(parsed.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_naive_sanitiser_would_merge_stay_distinct() {
        let ids = [
            "a:b", "a_b", "a/b", "a%2Fb", "x/../y", "y", ".", "..", "a.b", "a b",
        ];
        let names: std::collections::BTreeSet<String> = ids.iter().map(|i| encode(i)).collect();
        assert_eq!(names.len(), ids.len());
        assert_eq!(encode("a:b"), "a%3Ab");
        assert_eq!(encode("x/../y"), "x%2F%2E%2E%2Fy");
        assert_eq!(encode("."), "%2E");
        for id in ids.iter().copied().chain(["ü✓😀", "Conv", "-_-"]) {
            assert_eq!(decode(&encode(id)).as_deref(), Some(id), "{id:?}");
        }
    }

    #[test]
    fn only_the_canonical_spelling_decodes() {
        for foreign in ["%41", "%3a", "%3", "a+b", ".tmp", "a.b", "%FF", ""] {
            assert_eq!(decode(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn long_ids_split_into_fixed_levels_and_walk_back() {
        let dir = tempfile::tempdir().unwrap();
        let long = "é".repeat(256); // 512 bytes, 1536 encoded
        let exact = "c".repeat(CHUNK); // fits one level exactly
        let over = "c".repeat(CHUNK + 1); // shares its first level's text with `exact`
        for id in [long.as_str(), exact.as_str(), over.as_str(), "short"] {
            let parts = components(id);
            let (leaf, continued) = parts.split_last().unwrap();
            assert!(leaf.len() <= CHUNK && !leaf.ends_with(CONTINUED));
            assert!(continued.iter().all(|c| c.len() == CHUNK + 1));
            let path = nested(dir.path(), id);
            fs::create_dir_all(&path).unwrap();
        }
        assert_eq!(components(&long).len(), 8);
        fs::write(dir.path().join(".stray.tmp"), b"x").unwrap();
        let mut found: Vec<String> = leaves(dir.path())
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        found.sort();
        let mut expected = vec![long.clone(), exact, over, "short".to_owned()];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_nested_path_maps_back_to_its_id_and_nothing_else_does() {
        let base = Path::new("/store/events");
        let long = "r".repeat(CHUNK * 2 + 7);
        for id in ["0190a1b2-c3d4", "a:b", "x/../y", long.as_str()] {
            let path = nested(base, id);
            let relative = path.strip_prefix(base).unwrap();
            assert_eq!(id_of(relative).as_deref(), Some(id), "{id:?}");
        }
        let continuation = nested(base, &long);
        let parent = continuation.parent().unwrap().strip_prefix(base).unwrap();
        for foreign in [
            parent,
            Path::new(".x.tmp"),
            Path::new("a.log"),
            Path::new("a/b"),
        ] {
            assert_eq!(id_of(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn the_org_is_the_first_level_below_orgs() {
        let layout = Layout::new(PathBuf::from("/store"));
        let key = ConversationKey::parse("acme:eu", "bot", "telegram:42").unwrap();
        assert_eq!(
            layout.conversation_dir(&key),
            Path::new("/store/orgs/acme%3Aeu/bot/telegram%3A42")
        );
    }
}
