//! Record files: a conversation's state record and a run's record, changed by appending.
//!
//! A record file's current value is its last whole line. Each line is one JSON record, a tab
//! and the record's CRC-32C (eight hex digits), after a header line:
//!
//! ```text
//! lobu-records 2
//! {"format":2,"key":…,"last_fence":7,…}<TAB>1a2b3c4d
//! {"format":2,"key":…,"last_fence":8,…}<TAB>5e6f7a8b
//! ```
//!
//! A change appends one line ([`Disk::write_record`](crate::atomic::Disk::write_record)):
//! one `fdatasync` when the change must survive a power loss, none when a restart does
//! without it (a claim, a heartbeat). Replacing the file instead (a staging file renamed over
//! it) cost a new inode, a directory sync and, on ext4, an inode allocation that scans past
//! every recently deleted one: that scan was half of the file store's CPU time under load.
//!
//! A line without its newline or whose checksum does not match was torn by a crash (or a
//! power loss before its append was synced): readers skip it, and the next writer, holding
//! the file's lock, appends after the last whole line, cutting what follows. Every line is a
//! whole record, so the newest whole line is always a state that was once written. A file
//! past [`COMPACT_AT`] bytes is replaced whole by its new record. A file written by format 1
//! (one JSON document) reads as that record; its first change replaces it with a record
//! file.

use std::fs::File;
use std::path::Path;

use crate::error::{FileStoreError, io_at};

/// The first line of every record file.
pub(crate) const HEADER: &[u8] = b"lobu-records 2\n";

/// A record file that would grow past this many bytes is replaced by one holding only its
/// new record: readers read the whole file (and checksum only its newest line), so it stays
/// small. A conversation's state record carries its turns' bytes until then (see
/// [`crate::state`]), so this is also how many of them one replace retires.
pub(crate) const COMPACT_AT: usize = 64 * 1024;

/// CRC-32C (Castagnoli), as ext4, iSCSI and most storage formats use; sliced by 16, since
/// a commit's line carries its turn's bytes.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// The current record of a file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Current<'a> {
    /// A record file: its newest whole record, and where its last whole line ends (where
    /// the next line goes).
    Record { json: &'a [u8], end: usize },
    /// A file written by format 1: the whole file is the record.
    Whole(&'a [u8]),
}

/// One line holding `json` (which serde_json writes without raw tabs or newlines).
pub(crate) fn line(json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + 10);
    line.extend_from_slice(json);
    line.extend_from_slice(format!("\t{:08x}\n", CRC.checksum(json)).as_bytes());
    line
}

/// A whole record file holding only `json`.
pub(crate) fn file_of(json: &[u8]) -> Vec<u8> {
    let mut bytes = HEADER.to_vec();
    bytes.extend_from_slice(&line(json));
    bytes
}

/// The current record in `bytes`, or what is wrong with them. Looks from the end, so only
/// the newest whole line is checksummed (a commit line can carry a turn's bytes).
pub(crate) fn current(bytes: &[u8]) -> Result<Current<'_>, &'static str> {
    let Some(lines) = bytes.strip_prefix(HEADER) else {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        return match first {
            Some(b'{') => Ok(Current::Whole(bytes)),
            _ => Err("neither a record file nor a JSON record"),
        };
    };
    let (json, end) = last_whole(lines).ok_or("no whole record in it")?;
    let end = HEADER.len() + end;
    Ok(Current::Record { json, end })
}

/// The newest whole line of `lines` (which start at a line's start): its record and where
/// the line ends. Past the last newline is a torn line at most.
fn last_whole(lines: &[u8]) -> Option<(&[u8], usize)> {
    let mut end = memchr::memrchr(b'\n', lines)? + 1;
    loop {
        let start = memchr::memrchr(b'\n', &lines[..end - 1]).map_or(0, |i| i + 1);
        if let Some(json) = whole_line(&lines[start..end]) {
            return Some((json, end));
        }
        if start == 0 {
            return None;
        }
        end = start;
    }
}

/// How much of a record file's end a reader reads first: its newest line is almost always
/// in it, and the file can be much larger (a conversation's lines carry its turns' bytes).
const TAIL: u64 = 8 * 1024;

/// The current record of an open record file, read from its end.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) json: Vec<u8>,
    /// Where the next line goes; `None` for a file of format 1 (it is replaced instead).
    pub(crate) end: Option<u64>,
    /// The file's size when it was read.
    pub(crate) len: u64,
}

/// The current record of `file`, reading its end ([`TAIL`] bytes, more only when its newest
/// whole line starts before them) and its header.
pub(crate) fn read_current(file: &mut File, path: &Path) -> Result<Read, FileStoreError> {
    let len = file.metadata().map_err(io_at("inspect", path))?.len();
    let mut window = TAIL.min(len);
    loop {
        let from = len - window;
        if from <= HEADER.len() as u64 {
            let bytes = read_at(file, path, 0, len)?;
            let (json, end) = match current(&bytes) {
                Ok(Current::Record { json, end }) => (json, Some(end as u64)),
                Ok(Current::Whole(json)) => (json, None),
                Err(detail) => return Err(FileStoreError::corrupt(path, detail)),
            };
            return Ok(Read {
                json: json.to_vec(),
                end,
                len,
            });
        }
        let chunk = read_at(file, path, from, len)?;
        // Lines wholly in the chunk start after its first newline.
        let first = memchr::memchr(b'\n', &chunk).map(|i| i + 1);
        let found = first.and_then(|first| Some((first, last_whole(&chunk[first..])?)));
        if let Some((first, (json, end))) = found {
            if read_at(file, path, 0, HEADER.len() as u64)? != HEADER {
                window = len; // not a record file: read whole
                continue;
            }
            return Ok(Read {
                json: json.to_vec(),
                end: Some(from + (first + end) as u64),
                len,
            });
        }
        window = window.saturating_mul(4).min(len);
    }
}

/// Bytes `from..to` of `file` (fewer if it was cut meanwhile), read where they are, without
/// moving the file's position (one call for a whole record's tail).
#[cfg(unix)]
fn read_at(file: &mut File, path: &Path, from: u64, to: u64) -> Result<Vec<u8>, FileStoreError> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0; usize::try_from(to - from).unwrap_or(0)];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], from + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at("read", path)(e)),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Bytes `from..to` of `file` (fewer if it was cut meanwhile).
#[cfg(not(unix))]
fn read_at(file: &mut File, path: &Path, from: u64, to: u64) -> Result<Vec<u8>, FileStoreError> {
    use std::io::{Read as _, Seek, SeekFrom};
    file.seek(SeekFrom::Start(from))
        .map_err(io_at("seek in", path))?;
    let mut bytes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    file.take(to - from)
        .read_to_end(&mut bytes)
        .map_err(io_at("read", path))?;
    Ok(bytes)
}

/// The current record of the file at `path` as JSON, or `None` if there is no file.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileStoreError> {
    match File::open(path) {
        Ok(mut file) => read_current(&mut file, path).map(|read| Some(read.json)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at("open", path)(e)),
    }
}

/// Every whole record in `bytes`, oldest first (a file of format 1: its one record).
pub(crate) fn records(bytes: &[u8]) -> Vec<&[u8]> {
    match bytes.strip_prefix(HEADER) {
        Some(lines) => lines
            .split_inclusive(|&b| b == b'\n')
            .filter_map(whole_line)
            .collect(),
        None => vec![bytes],
    }
}

/// The record of one line (with its newline), if it is whole.
fn whole_line(raw: &[u8]) -> Option<&[u8]> {
    let text = raw.strip_suffix(b"\n")?;
    let tab = memchr::memrchr(b'\t', text)?;
    let (json, sum) = (&text[..tab], &text[tab + 1..]);
    let sum = std::str::from_utf8(sum).ok().filter(|s| s.len() == 8)?;
    let sum = u32::from_str_radix(sum, 16).ok()?;
    (!json.is_empty() && CRC.checksum(json) == sum).then_some(json)
}

/// The current record of the state or run record file at `path`, as JSON: for tools and
/// tests that inspect a data directory. A file written by format 1 is returned whole.
///
/// # Errors
/// `Corrupt` if the file holds no whole record, `Io` if it cannot be read.
pub fn read_record(path: impl AsRef<Path>) -> Result<Vec<u8>, FileStoreError> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(io_at("open", path))?;
    read_current(&mut file, path).map(|read| read.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&[u8]]) -> Vec<u8> {
        let mut bytes = HEADER.to_vec();
        for l in lines {
            bytes.extend_from_slice(l);
        }
        bytes
    }

    #[test]
    fn the_newest_whole_line_is_the_record() {
        let bytes = file(&[&line(b"{\"a\":1}"), &line(b"{\"a\":2}")]);
        assert_eq!(
            current(&bytes),
            Ok(Current::Record {
                json: b"{\"a\":2}",
                end: bytes.len()
            })
        );
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_line_goes_where_it_began() {
        let first = line(b"{\"a\":1}");
        let second = line(b"{\"a\":2}");
        for cut in 1..second.len() {
            let bytes = file(&[&first, &second[..cut]]);
            let end = HEADER.len() + first.len();
            assert_eq!(
                current(&bytes),
                Ok(Current::Record {
                    json: b"{\"a\":1}",
                    end
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_line_whose_checksum_does_not_match_is_skipped() {
        let mut second = line(b"{\"a\":2}");
        second[3] = b'9';
        let bytes = file(&[&line(b"{\"a\":1}"), &second]);
        assert!(matches!(
            current(&bytes),
            Ok(Current::Record {
                json: b"{\"a\":1}",
                ..
            })
        ));
    }

    #[test]
    fn zeros_left_by_a_power_loss_are_not_a_record() {
        let mut zeros = vec![0u8; 64];
        zeros.push(b'\n');
        let bytes = file(&[&line(b"{\"a\":1}"), &zeros]);
        assert!(matches!(
            current(&bytes),
            Ok(Current::Record {
                json: b"{\"a\":1}",
                ..
            })
        ));
        assert!(whole_line(b"\t00000000\n").is_none(), "an empty record");
    }

    #[test]
    fn a_format_1_file_is_one_whole_record() {
        assert_eq!(current(b"{\"a\":1}"), Ok(Current::Whole(b"{\"a\":1}")));
        assert_eq!(
            current(b"\n  {\"a\":1}\n"),
            Ok(Current::Whole(b"\n  {\"a\":1}\n"))
        );
    }

    #[test]
    fn a_file_with_no_whole_record_is_refused() {
        assert!(current(b"").is_err());
        assert!(current(b"garbage").is_err());
        assert!(current(HEADER).is_err());
        assert!(current(&file(&[b"{\"a\":1}\t00000000\n"])).is_err());
    }

    mod on_disk {
        use std::path::Path;

        use crate::atomic::{Disk, Durability};
        use crate::record_file::{COMPACT_AT, HEADER, line, read_record};

        const DISK: Disk = Disk { fsync: true };

        fn write(dir: &Path, json: &str, durability: Durability) {
            DISK.write_record(dir, "r", json.as_bytes(), durability)
                .unwrap();
        }

        #[test]
        fn a_file_is_made_or_replaced_durably_even_by_a_change_that_need_not_last() {
            let dir = tempfile::tempdir().unwrap();
            crate::atomic::counted::take();
            write(dir.path(), "{\"a\":1}", Durability::Recoverable);
            // Later lines synced into it would not last if its name did not.
            assert_eq!(
                crate::atomic::counted::take(),
                (1, 1),
                "made: file and directory"
            );
            write(dir.path(), "{\"a\":2}", Durability::Recoverable);
            assert_eq!(crate::atomic::counted::take(), (0, 0), "appended: nothing");
            write(dir.path(), "{\"a\":3}", Durability::Durable);
            assert_eq!(
                crate::atomic::counted::take(),
                (1, 0),
                "appended durably: the file"
            );
        }

        #[test]
        fn a_change_appends_one_line_to_the_file() {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "{\"a\":1}", Durability::Durable);
            write(dir.path(), "{\"a\":2}", Durability::Recoverable);
            let mut expected = HEADER.to_vec();
            expected.extend(line(b"{\"a\":1}"));
            expected.extend(line(b"{\"a\":2}"));
            assert_eq!(std::fs::read(dir.path().join("r")).unwrap(), expected);
            assert_eq!(read_record(dir.path().join("r")).unwrap(), b"{\"a\":2}");
        }

        #[test]
        fn the_next_change_cuts_a_torn_tail() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            write(dir.path(), "{\"a\":1}", Durability::Durable);
            let whole = std::fs::read(&path).unwrap();
            let mut torn = whole.clone();
            torn.extend_from_slice(b"{\"a\":2}\t1234");
            std::fs::write(&path, &torn).unwrap();
            assert_eq!(read_record(&path).unwrap(), b"{\"a\":1}");
            write(dir.path(), "{\"a\":3}", Durability::Durable);
            let mut expected = whole;
            expected.extend(line(b"{\"a\":3}"));
            assert_eq!(std::fs::read(&path).unwrap(), expected);
        }

        #[test]
        fn a_file_about_to_pass_its_limit_is_replaced_by_its_new_record() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let mut largest = 0;
            let pad = "x".repeat(100);
            for i in 0..2_000 {
                let json = format!("{{\"i\":{i},\"pad\":\"{pad}\"}}");
                write(dir.path(), &json, Durability::Recoverable);
                largest = largest.max(std::fs::metadata(&path).unwrap().len());
            }
            assert!(largest <= COMPACT_AT as u64, "{largest} bytes");
            let last = format!("{{\"i\":1999,\"pad\":\"{pad}\"}}");
            assert_eq!(read_record(&path).unwrap(), last.as_bytes());
        }

        #[test]
        fn the_newest_record_is_read_from_the_end_however_long_it_or_the_file_is() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let short = |i: usize| format!("{{\"i\":{i}}}");
            for i in 0..2_000 {
                write(dir.path(), &short(i), Durability::Recoverable);
            }
            assert_eq!(read_record(&path).unwrap(), short(1999).as_bytes());
            // A newest line longer than the first look, then one torn after it.
            let long = format!("{{\"big\":\"{}\"}}", "y".repeat(20_000));
            write(dir.path(), &long, Durability::Recoverable);
            assert_eq!(read_record(&path).unwrap(), long.as_bytes());
            let mut torn = std::fs::read(&path).unwrap();
            torn.extend_from_slice(&line(short(7).as_bytes())[..5]);
            std::fs::write(&path, &torn).unwrap();
            assert_eq!(read_record(&path).unwrap(), long.as_bytes());
            write(dir.path(), &short(8), Durability::Durable);
            assert_eq!(read_record(&path).unwrap(), short(8).as_bytes());
        }

        #[test]
        fn a_format_1_record_longer_than_the_first_look_reads_whole() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            let json = format!("{{\"a\":\"{}\"}}", "z".repeat(30_000));
            std::fs::write(&path, &json).unwrap();
            assert_eq!(read_record(&path).unwrap(), json.as_bytes());
        }

        #[test]
        fn a_format_1_record_becomes_a_record_file_when_it_changes() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r");
            std::fs::write(&path, b"{\"a\":1}").unwrap();
            assert_eq!(read_record(&path).unwrap(), b"{\"a\":1}");
            write(dir.path(), "{\"a\":2}", Durability::Recoverable);
            let mut expected = HEADER.to_vec();
            expected.extend(line(b"{\"a\":2}"));
            assert_eq!(std::fs::read(&path).unwrap(), expected);
        }
    }

    #[test]
    fn every_whole_record_is_listed_oldest_first() {
        let mut bad = line(b"{\"a\":2}");
        bad[3] = b'9';
        let bytes = file(&[&line(b"{\"a\":1}"), &bad, &line(b"{\"a\":3}"), b"{\"a\""]);
        assert_eq!(records(&bytes), [b"{\"a\":1}", b"{\"a\":3}"]);
        assert_eq!(records(b"{\"a\":1}"), [b"{\"a\":1}"]);
    }

    #[test]
    fn a_file_holding_one_record_reads_back_as_it() {
        let bytes = file_of(b"{\"a\":1}");
        assert!(bytes.starts_with(HEADER));
        assert!(matches!(
            current(&bytes),
            Ok(Current::Record {
                json: b"{\"a\":1}",
                ..
            })
        ));
    }
}
