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

/// A known whole prefix of a log: its first `len` bytes are complete appends, the last one
/// ending at event `seq`. The empty log is `Tail::default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) len: u64,
    pub(crate) seq: u64,
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

/// What a scan found: the whole prefix, and the events it was asked to keep.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) tail: Tail,
    pub(crate) events: Vec<StoredEvent>,
}

/// Read `file` from `from` (a whole prefix found earlier, or the empty log) to its end or
/// its torn tail, keeping at most `limit` events with a seq above `after`.
pub(crate) fn scan(file: &File, from: Tail, after: u64, limit: usize) -> io::Result<Scan> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    reader.seek(SeekFrom::Start(from.len))?;
    let mut tail = from;
    let (mut offset, mut seq) = (from.len, from.seq);
    let mut events = Vec::new();
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
        let want = seq + 1;
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
        seq = want;
        offset += n as u64;
        open.extend(kept);
        if seq == last {
            tail = Tail { len: offset, seq };
            events.append(&mut open);
            open_last = None;
        } else {
            open_last = Some(last);
        }
    }
    Ok(Scan { tail, events })
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
        assert_eq!(all.tail, Tail { len, seq: 3 });
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
}
