//! The `cargo fuzz` corpora (`fuzz/corpus/<target>/`), replayed in the normal test run
//! through the same functions the fuzz targets call: no input panics, each gets a typed
//! answer, and a few seeds are pinned to what they must give.

use std::path::{Path, PathBuf};

use lobu_core::testkit::fuzz::{IdOutcome, TranscriptOutcome, id_parsers, transcript_reader};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the {target} corpus at {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the {target} corpus has {} seeds",
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a seed"))
        })
        .collect()
}

#[test]
fn every_transcript_seed_is_read_without_a_panic_and_counted() {
    let mut outcomes = Vec::new();
    for (name, bytes) in corpus("transcript") {
        let outcome = std::panic::catch_unwind(|| transcript_reader(&bytes))
            .unwrap_or_else(|_| panic!("seed {name} broke an invariant of the reader"));
        outcomes.push((name, outcome));
    }
    let of = |seed: &str| {
        outcomes
            .iter()
            .find(|(name, _)| name == seed)
            .map(|(_, outcome)| *outcome)
            .unwrap_or_else(|| panic!("no seed {seed}"))
    };
    let counts = |o: TranscriptOutcome| (o.entries, o.skipped, o.messages);
    assert_eq!(counts(of("good")), (3, 0, 3));
    assert_eq!(counts(of("empty")), (0, 0, 0));
    assert_eq!(counts(of("header-only")), (0, 0, 0));
    assert_eq!(counts(of("torn-last-line")), (3, 1, 3));
    assert_eq!(counts(of("invalid-utf8")), (0, 2, 0));
    assert_eq!(counts(of("deeply-nested")), (0, 1, 0));
    assert_eq!(counts(of("not-objects")), (0, 4, 0));
    assert_eq!(counts(of("duplicate-ids")), (3, 0, 3));
}

#[test]
fn every_id_seed_gets_a_typed_answer_from_every_parser() {
    let mut outcomes = Vec::new();
    for (name, bytes) in corpus("ids") {
        let outcome = std::panic::catch_unwind(|| id_parsers(&bytes))
            .unwrap_or_else(|_| panic!("seed {name} broke an invariant of the id parsers"));
        assert_eq!(outcome.accepted + outcome.refused, 5, "{name}");
        outcomes.push((name, outcome));
    }
    let of = |seed: &str| -> IdOutcome {
        outcomes
            .iter()
            .find(|(name, _)| name == seed)
            .map(|(_, outcome)| *outcome)
            .unwrap_or_else(|| panic!("no seed {seed}"))
    };
    assert_eq!(of("plain").accepted, 5);
    assert_eq!(of("dotdot").accepted, 5, "`..` is a valid id, never a path");
    for refused in ["empty", "nul", "controls", "c1-control"] {
        assert_eq!(of(refused).refused, 5, "{refused}");
    }
    assert_eq!(
        of("unicode-long").refused,
        4,
        "512 bytes: only a conversation id"
    );
    assert_eq!(of("unicode-over").refused, 5);
    assert!(of("key-parts").key);
    assert!(!of("key-bad-agent").key);
    assert!(!of("key-empty-parts").key);
}
