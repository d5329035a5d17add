//! How persist stores a transcript: a delta after the head, or a whole copy (a re-base).
//! Pure decisions, so they are tested without a database.

use lobu_core::transcript::hash::TranscriptHash;

/// The SHA-256 of a whole transcript (and its state, stored with a head so an append resumes
/// it) and, when asked, of its first `prefix_len` bytes: one pass over the bytes tells
/// whether they extend a stored snapshot without reading it back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Digests {
    pub(crate) full: Vec<u8>,
    pub(crate) state: Vec<u8>,
    pub(crate) prefix: Option<Vec<u8>>,
}

impl Digests {
    pub(crate) fn of(bytes: &[u8], prefix_len: Option<usize>) -> Digests {
        let mut hasher = TranscriptHash::new();
        let prefix = match prefix_len {
            Some(n) if n <= bytes.len() => {
                hasher.update(&bytes[..n]);
                let prefix = hasher.digest().to_vec();
                hasher.update(&bytes[n..]);
                Some(prefix)
            }
            _ => {
                hasher.update(bytes);
                None
            }
        };
        Digests::after(&hasher, prefix)
    }

    /// The digests of what `hasher` was fed.
    pub(crate) fn after(hasher: &TranscriptHash, prefix: Option<Vec<u8>>) -> Digests {
        Digests {
            full: hasher.digest().to_vec(),
            state: hasher.state(),
            prefix,
        }
    }

    /// Whether the transcript starts with the stored one of `stored_digest`.
    pub(crate) fn extends(&self, stored_digest: &[u8]) -> bool {
        self.prefix.as_deref() == Some(stored_digest)
    }
}

/// The head's delta chain as the conversations row records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    pub(crate) base_bytes: i64,
    pub(crate) deltas: i32,
    pub(crate) delta_bytes: i64,
}

/// Past `max_deltas` rows, a chain still takes deltas while they stay under this share
/// (1/8) of the whole copy they extend (sql/commit_fast.sql binds the same number).
pub(crate) const SMALL_CHAIN_SHARE: i64 = 8;

/// Store `new_bytes` as one more delta, or re-base? A delta while the chain is short (fewer
/// than `max_deltas` rows, or deltas under an eighth of the whole copy) and deltas not
/// outgrowing the whole copy they extend. A re-base rewrites the whole copy (tens of ms at
/// 8 MB), so on a long conversation it waits until the deltas are worth it: re-bases come at
/// geometrically growing sizes and cost O(1) amortised per appended byte, while hydrate
/// reads one whole copy and at most an eighth of it again in small rows. Small deltas stay
/// inline and uncompressed while a whole copy is compressed, so the byte rule bounds storage.
pub(crate) fn store_as_delta(chain: Chain, new_bytes: usize, max_deltas: u32) -> bool {
    let after = chain
        .delta_bytes
        .saturating_add(i64::try_from(new_bytes).unwrap_or(i64::MAX));
    let short = u32::try_from(chain.deltas).is_ok_and(|d| d < max_deltas)
        || after < chain.base_bytes / SMALL_CHAIN_SHARE;
    short && after <= chain.base_bytes
}

/// Where the last line of the first `head_len` bytes starts: a title search over the new
/// bytes starts there, so a head that ended mid-line is re-read as one whole line.
pub(crate) fn last_line_start(bytes: &[u8], head_len: usize) -> usize {
    bytes[..head_len]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_extends_exactly_its_prefixes() {
        let head = b"{\"a\":1}\n";
        let head_digest = Digests::of(head, None).full;
        let longer = b"{\"a\":1}\n{\"b\":2}\n";
        assert!(Digests::of(longer, Some(head.len())).extends(&head_digest));
        assert!(Digests::of(head, Some(head.len())).extends(&head_digest));
        let divergent = b"{\"a\":2}\n{\"b\":2}\n";
        assert!(!Digests::of(divergent, Some(head.len())).extends(&head_digest));
        // Shorter than the head: no prefix to compare, never an extension.
        assert!(!Digests::of(b"{", Some(head.len())).extends(&head_digest));
    }

    #[test]
    fn the_full_digest_does_not_depend_on_the_prefix_split() {
        let bytes = "héllo\nwörld\n".as_bytes();
        let whole = Digests::of(bytes, None).full;
        for split in 0..=bytes.len() {
            assert_eq!(Digests::of(bytes, Some(split)).full, whole);
        }
    }

    #[test]
    fn chains_rebase_on_count_or_when_deltas_outgrow_the_base() {
        let chain = |deltas, delta_bytes| Chain {
            base_bytes: 1000,
            deltas,
            delta_bytes,
        };
        assert!(store_as_delta(chain(0, 0), 100, 32));
        assert!(store_as_delta(chain(31, 800), 200, 32));
        assert!(!store_as_delta(chain(32, 800), 10, 32), "too many deltas");
        let long = |deltas, delta_bytes| Chain {
            base_bytes: 8_000_000,
            deltas,
            delta_bytes,
        };
        assert!(
            store_as_delta(long(500, 400_000), 800, 32),
            "many small deltas on a long history"
        );
        assert!(
            !store_as_delta(long(1250, 999_900), 800, 32),
            "until they reach an eighth of it"
        );
        assert!(
            !store_as_delta(chain(3, 900), 101, 32),
            "deltas outgrow the base"
        );
        let empty_base = Chain {
            base_bytes: 0,
            deltas: 0,
            delta_bytes: 0,
        };
        assert!(!store_as_delta(empty_base, 1, 32));
    }

    #[test]
    fn title_search_restarts_at_the_heads_last_line() {
        assert_eq!(last_line_start(b"ab\ncd\nef", 8), 6);
        assert_eq!(last_line_start(b"ab\ncd\n", 6), 6);
        assert_eq!(last_line_start(b"abc", 3), 0);
        assert_eq!(last_line_start(b"abc", 0), 0);
    }
}
