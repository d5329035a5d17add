//! The SHA-256 stores keep of a transcript, resumable from the state after its bytes: a
//! store keeps that state beside the head (40 bytes plus the last partial block), so the
//! digest of the head extended by one turn costs the turn's bytes, not the history's.
//! Every backend uses this one hasher, so a digest means the same in each.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// SHA-256 over a transcript's bytes, fed in order, whose state can be stored and resumed.
#[derive(Clone, Default)]
pub struct TranscriptHash(Sha256);

impl std::fmt::Debug for TranscriptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TranscriptHash")
            .field(&hex(&self.digest()))
            .finish()
    }
}

impl TranscriptHash {
    /// The hash of no bytes.
    pub fn new() -> Self {
        TranscriptHash::default()
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hash = TranscriptHash::new();
        hash.update(bytes);
        hash
    }

    /// Resume from a state [`TranscriptHash::state`] gave. `Corrupt` if `state` is not one.
    pub fn resume(state: &[u8]) -> Result<Self> {
        let serialized = state
            .try_into()
            .map_err(|_| Error::corrupt(format!("a stored hash state of {} bytes", state.len())))?;
        Sha256::deserialize(serialized)
            .map(TranscriptHash)
            .map_err(|e| Error::corrupt("a stored hash state does not decode").with_source(e))
    }

    /// Feed the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The state after the bytes fed so far, to store and [`resume`](TranscriptHash::resume).
    pub fn state(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// The digest of the bytes fed so far (the hash can go on after it).
    pub fn digest(&self) -> Digest {
        self.0.clone().finalize().into()
    }
}

/// The digest of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    TranscriptHash::of(bytes).digest()
}

/// `digest` in lower-case hex (as the file store writes it).
pub fn hex(digest: &[u8]) -> String {
    ::hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_hash_gives_the_digest_of_the_whole() {
        let whole = b"{\"type\":\"session\"}\n{\"type\":\"message\",\"id\":\"a\"}\n".repeat(7);
        for split in [0, 1, 63, 64, 65, 200, whole.len()] {
            let state = TranscriptHash::of(&whole[..split]).state();
            let mut resumed = TranscriptHash::resume(&state).unwrap();
            resumed.update(&whole[split..]);
            assert_eq!(resumed.digest(), digest(&whole), "split at {split}");
        }
    }

    #[test]
    fn the_digest_is_plain_sha256() {
        assert_eq!(
            hex(&digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn taking_the_digest_does_not_end_the_hash() {
        let mut hash = TranscriptHash::of(b"ab");
        let _ = hash.digest();
        hash.update(b"c");
        assert_eq!(hash.digest(), digest(b"abc"));
    }

    #[test]
    fn a_damaged_state_is_corrupt_not_a_panic() {
        let state = TranscriptHash::of(b"abc").state();
        let garbage = vec![0xff; state.len()];
        for bad in [
            &state[..state.len() - 1],
            &[][..],
            &[0u8; 500][..],
            &garbage[..],
        ] {
            let err = TranscriptHash::resume(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        }
    }
}
