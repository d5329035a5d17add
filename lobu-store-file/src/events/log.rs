//! The format of one run's event log: one JSON line per event, framed so that a torn tail is
//! seen and ignored.
//!
//! ```text
//! {"seq":1,"attempt":1,"last":2,"data":"{\"type\":\"started\"}"}
//! {"seq":2,"attempt":1,"last":2,"data":"{\"type\":\"output\",\"text\":\"hi\"}"}
//! {"seq":3,"attempt":1,"last":3,"data":"{\"type\":\"output\",\"text\":\"!\"}"}
//! ```
//!
//! `data` is the event's JSON text as recorded, embedded as a string (so it comes back byte
//! for byte, whatever whitespace it had, and never breaks the line framing); `last` is the
//! seq of the last event of the append the line was written with. An append counts only
//! once its last line is whole: a line without its `\n`, one that does not decode, one whose
//! seq does not follow the one before, or an append whose last line is missing ends the log
//! there. Whatever follows is a torn tail (a process died mid-`write`, or a power loss kept
//! only some pages): readers ignore it and the next appender cuts it off before it writes.
//!
//! A log trimmed by a bounded `prune_events` starts past seq 1 (possibly inside an append,
//! whose remaining lines keep their `last`): the first line's seq is where numbering starts.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use lobu_core::events::{MAX_EVENT_BYTES, StoredEvent};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// The longest line an event can make: embedding doubles at most every byte (`"` and `\`
/// become two; JSON text holds no other character that needs escaping but the whitespace
/// `\t`, `\n`, `\r`, which become two as well), plus the other fields. A longer line is
/// damage, and is not read whole into memory.
const MAX_LINE: u64 = 2 * MAX_EVENT_BYTES as u64 + 256;

/// A known whole prefix of a log: its first `len` bytes are complete appends, the first
/// event `first` (1 unless the log was trimmed), the last one `seq`. The empty log is
/// `Tail::default()` (`first` 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) len: u64,
    pub(crate) seq: u64,
    pub(crate) first: u64,
}

impl Tail {
    /// How many events the prefix holds.
    pub(crate) fn events(&self) -> u64 {
        if self.len == 0 {
            0
        } else {
            self.seq - self.first + 1
        }
    }

    /// The prefix after `more` bytes holding events `seq + 1 ..= seq + count` were appended.
    pub(crate) fn appended(&self, more: u64, count: u64) -> Tail {
        Tail {
            len: self.len + more,
            seq: self.seq + count,
            first: if self.len == 0 {
                self.seq + 1
            } else {
                self.first
            },
        }
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    attempt: u32,
    last: u64,
    data: &'a str,
}

#[derive(Deserialize)]
struct Line<D> {
    seq: u64,
    attempt: u32,
    last: u64,
    data: D,
}

/// The bytes of one append of `events` by `attempt`, numbered after `after`.
pub(crate) fn encode_append(
    after: u64,
    attempt: u32,
    events: &[String],
) -> serde_json::Result<Vec<u8>> {
    let last = after + events.len() as u64;
    let size = events.iter().map(|e| e.len() + e.len() / 8 + 64).sum();
    let mut out = Vec::with_capacity(size);
    for (seq, data) in (after + 1..).zip(events) {
        let line = LineOut {
            seq,
            attempt,
            last,
            data,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// What a scan found: the whole prefix, the events it was asked to keep, and where the
/// first whole event after the seq it was given starts (`None`: the prefix has none).
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) tail: Tail,
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) after_at: Option<u64>,
}

/// Read `file` from `from` (a whole prefix found earlier, or the empty log) to its end or
/// its torn tail, keeping at most `limit` events with a seq above `after`.
pub(crate) fn scan(file: &File, from: Tail, after: u64, limit: usize) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader.seek(SeekFrom::Start(from.len))?;
    let mut tail = from;
    let (mut offset, mut seq, mut first) = (from.len, from.seq, from.first);
    let mut events = Vec::new();
    let mut after_at = None;
    // The kept events of an append whose last line is not read yet, and that append's end.
    let mut open: Vec<StoredEvent> = Vec::new();
    let mut open_last = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            break; // the end, or a line that never got its newline
        }
        let want = if offset == 0 {
            // The first line says where numbering starts (past 1 in a trimmed log).
            match serde_json::from_slice::<Line<IgnoredAny>>(&line) {
                Ok(line) if line.seq > 0 => line.seq,
                _ => break,
            }
        } else {
            let Some(next) = seq.checked_add(1) else {
                break; // only a damaged first line numbers so far
            };
            next
        };
        let keep = want > after && events.len() + open.len() < limit;
        let (last, kept) = if keep {
            let Ok(line) = serde_json::from_slice::<Line<String>>(&line) else {
                break;
            };
            let event = StoredEvent {
                seq: line.seq,
                attempt: line.attempt,
                data: line.data,
            };
            (check(line.seq, want, line.last, open_last), Some(event))
        } else {
            let Ok(line) = serde_json::from_slice::<Line<IgnoredAny>>(&line) else {
                break;
            };
            let _ = (line.attempt, line.data);
            (check(line.seq, want, line.last, open_last), None)
        };
        let Some(last) = last else {
            break;
        };
        if offset == 0 {
            first = want;
        }
        if want > after && after_at.is_none() {
            after_at = Some(offset);
        }
        seq = want;
        offset += n as u64;
        open.extend(kept);
        if seq == last {
            tail = Tail {
                len: offset,
                seq,
                first,
            };
            events.append(&mut open);
            open_last = None;
        } else {
            open_last = Some(last);
        }
    }
    Ok(Scan {
        tail,
        events,
        after_at: after_at.filter(|at| *at < tail.len),
    })
}

/// The seq of the log's first line, read from its first bytes (every line starts
/// `{"seq":`); `None` when they do not say. A trimmed log's differs from the log it was
/// trimmed from, which is how a reader tells that a prefix it remembers no longer holds.
pub(crate) fn first_seq(file: &File) -> io::Result<Option<u64>> {
    const PREFIX: &[u8] = b"{\"seq\":";
    let mut head = [0; 32];
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    let Some(rest) = head[..filled].strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == rest.len() {
        return Ok(None); // no end to the number within the bytes read
    }
    let text = std::str::from_utf8(&rest[..digits]).unwrap_or_default();
    Ok(text.parse().ok())
}

/// The line's `last` if it continues the log: its seq is the next one, and its `last` is
/// not behind it and agrees with the open append's.
fn check(seq: u64, want: u64, last: u64, open_last: Option<u64>) -> Option<u64> {
    let fits = seq == want && last >= want && open_last.is_none_or(|open| open == last);
    fits.then_some(last)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn log_of(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn events(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn appends_read_back_byte_for_byte_after_any_seq() {
        let pretty = "{\n\t\"a\": \"q\\\"uote\\\\ é👋\"\r\n}";
        let mut bytes = encode_append(0, 1, &events(&[pretty, "{}"])).unwrap();
        bytes.extend(encode_append(2, 2, &events(&[r#"{"n":3}"#])).unwrap());
        assert_eq!(
            bytes.iter().filter(|b| **b == b'\n').count(),
            3,
            "one line each"
        );
        let (_dir, file) = log_of(&bytes);
        let all = scan(&file, Tail::default(), 0, 10).unwrap();
        let len = bytes.len() as u64;
        let whole = Tail {
            len,
            seq: 3,
            first: 1,
        };
        assert_eq!(all.tail, whole);
        let got: Vec<(u64, u32, &str)> = all
            .events
            .iter()
            .map(|e| (e.seq, e.attempt, e.data.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, 1, pretty), (2, 1, "{}"), (3, 2, r#"{"n":3}"#)]
        );
        let later = scan(&file, Tail::default(), 1, 1).unwrap();
        assert_eq!(
            later.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(later.tail.seq, 3, "the tail is found past the limit");
        let first = encode_append(0, 1, &events(&[pretty, "{}"])).unwrap();
        let resumed = Tail {
            len: first.len() as u64,
            seq: 2,
            first: 1,
        };
        let rest = scan(&file, resumed, 2, 10).unwrap();
        assert_eq!(
            (rest.tail.seq, rest.events.len()),
            (3, 1),
            "from a known tail"
        );
    }

    #[test]
    fn a_torn_tail_ends_the_log_wherever_the_append_was_cut() {
        let whole = encode_append(0, 1, &events(&["{}"])).unwrap();
        let batch = encode_append(1, 1, &events(&[r#"{"a":1}"#, r#"{"b":2}"#])).unwrap();
        let kept = Tail {
            len: whole.len() as u64,
            seq: 1,
            first: 1,
        };
        for cut in 0..batch.len() {
            let mut bytes = whole.clone();
            bytes.extend(&batch[..cut]);
            let (_dir, file) = log_of(&bytes);
            let found = scan(&file, Tail::default(), 0, 10).unwrap();
            assert_eq!(found.tail, kept, "cut at {cut}");
            assert_eq!(found.events.len(), 1, "cut at {cut}: no part of the append");
        }
        for damage in [
            &b"garbage\n"[..],
            b"\0\0\0\0",
            b"{\"seq\":5,\"attempt\":1,\"last\":5,\"data\":\"{}\"}\n",
        ] {
            let mut bytes = whole.clone();
            bytes.extend(damage);
            bytes.extend(&batch);
            let (_dir, file) = log_of(&bytes);
            assert_eq!(scan(&file, Tail::default(), 0, 10).unwrap().tail, kept);
        }
    }

    #[test]
    fn a_trimmed_log_numbers_from_its_first_line_even_inside_an_append() {
        let mut bytes = encode_append(0, 1, &events(&["{}", "{}"])).unwrap();
        bytes.extend(encode_append(2, 2, &events(&["{}", "{}", "{}"])).unwrap());
        let (_dir, file) = log_of(&bytes);
        let all = scan(&file, Tail::default(), 3, 0).unwrap();
        assert_eq!(all.tail.events(), 5);
        assert_eq!(first_seq(&file).unwrap(), Some(1));
        // What a prune that takes 3 events keeps: the rest of the second append.
        let cut = all.after_at.expect("events after seq 3") as usize;
        let (_dir, trimmed) = log_of(&bytes[cut..]);
        let found = scan(&trimmed, Tail::default(), 0, 10).unwrap();
        let expected = Tail {
            len: (bytes.len() - cut) as u64,
            seq: 5,
            first: 4,
        };
        assert_eq!(found.tail, expected);
        assert_eq!(found.tail.events(), 2);
        let seqs: Vec<u64> = found.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(first_seq(&trimmed).unwrap(), Some(4));
        let none_after = scan(&trimmed, Tail::default(), 5, 10).unwrap();
        assert_eq!(none_after.after_at, None);
        let (_dir, empty) = log_of(b"");
        assert_eq!(first_seq(&empty).unwrap(), None);
        assert_eq!(
            scan(&empty, Tail::default(), 0, 10).unwrap().tail.events(),
            0
        );
    }
}
