//! Just enough of PostgreSQL's wire protocol for the fault proxy: the server's messages are
//! a type byte, a big-endian length (counting itself, not the type byte) and a body, and
//! `ReadyForQuery` (`Z`, length 5) carries the transaction status: `I` idle, `T` inside a
//! transaction, `E` inside a failed one.

/// Follows the server's side of one connection across read boundaries.
#[derive(Debug, Default)]
pub(crate) struct ReadyTracker {
    /// Bytes of the current message's header seen so far (type + length).
    header: Vec<u8>,
    /// Body bytes of the current message still to skip.
    remaining: usize,
    /// The current message is `ReadyForQuery` and its status byte comes next.
    ready_status_next: bool,
}

impl ReadyTracker {
    /// Read `bytes`; `Some(in_transaction)` when they held a `ReadyForQuery` (the last one).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        let mut found = None;
        let mut at = 0;
        while at < bytes.len() {
            if self.remaining > 0 {
                if self.ready_status_next {
                    found = Some(matches!(bytes[at], b'T' | b'E'));
                    self.ready_status_next = false;
                }
                let take = self.remaining.min(bytes.len() - at);
                self.remaining -= take;
                at += take;
                continue;
            }
            self.header.push(bytes[at]);
            at += 1;
            if self.header.len() == 5 {
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                self.ready_status_next = self.header[0] == b'Z' && length == 5;
                self.remaining = length.saturating_sub(4);
                self.header.clear();
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn ready_for_query_reports_the_transaction_status() {
        let mut tracker = ReadyTracker::default();
        let mut bytes = message(b'C', b"INSERT 0 1\0");
        bytes.extend(message(b'Z', b"T"));
        assert_eq!(tracker.feed(&bytes), Some(true));
        assert_eq!(tracker.feed(&message(b'Z', b"I")), Some(false));
        assert_eq!(tracker.feed(&message(b'Z', b"E")), Some(true));
        assert_eq!(tracker.feed(&message(b'D', b"ZZZZZT")), None);
    }

    #[test]
    fn messages_split_across_reads_are_followed() {
        let mut bytes = message(b'D', &[b'Z'; 300]);
        bytes.extend(message(b'Z', b"T"));
        let mut tracker = ReadyTracker::default();
        let mut found = None;
        for chunk in bytes.chunks(3) {
            found = tracker.feed(chunk).or(found);
        }
        assert_eq!(found, Some(true));
    }
}
