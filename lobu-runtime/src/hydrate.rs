//! Reading a conversation's head through the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lobu_core::transcript::{self, Transcript};
use lobu_core::{ConversationKey, Result, RunId, Version};

use crate::cache::Parse;
use crate::instruments;
use crate::metrics::{add, add_time, bump};
use crate::runtime::Shared;
use crate::spans::conversation_span;
use tracing::Instrument;

/// A conversation's head as a turn starts from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hydrated {
    /// `None`: the conversation has no completed transcript.
    pub(crate) version: Option<Version>,
    /// The run that wrote the head.
    pub(crate) run: Option<RunId>,
    pub(crate) transcript: Bytes,
    /// `parse(transcript)`, from the cache when it had it.
    pub(crate) parsed: Arc<Transcript>,
}

/// The head of `key`. A cheap version check first: when the cache holds exactly the head
/// version, the transcript is not read again (lobu re-read the whole transcript every turn).
pub(crate) async fn hydrate(shared: &Shared, key: &ConversationKey) -> Result<Hydrated> {
    let started = Instant::now();
    let span = conversation_span!("lobu.hydrate", key);
    let result = read(shared, key).instrument(span).await;
    timed(shared, key, started.elapsed());
    result
}

fn timed(shared: &Shared, key: &ConversationKey, took: Duration) {
    add_time(&shared.counters.hydrate_micros, took);
    instruments::hydrated(&instruments::labels(&shared.settings, key), took);
}

/// The head of a claimed conversation, whose head version the claim reported: nobody else
/// can move the head while the claim is held, so no version check is needed, and with the
/// cache holding that version nothing is read at all (0 round trips; else 1). The cached
/// parse is taken out for the turn to extend (see [`TranscriptCache`](crate::cache)).
pub(crate) async fn hydrate_claimed(
    shared: &Shared,
    key: &ConversationKey,
    head: Option<Version>,
) -> Result<Hydrated> {
    let started = Instant::now();
    let result = match head {
        Some(head) => {
            let span = conversation_span!("lobu.hydrate", key, head = %head);
            from_head(shared, key, head, Parse::Take)
                .instrument(span)
                .await
        }
        None => {
            shared.cache.remove(key);
            Ok(Hydrated::default())
        }
    };
    timed(shared, key, started.elapsed());
    result
}

async fn read(shared: &Shared, key: &ConversationKey) -> Result<Hydrated> {
    let sessions = &shared.backend.sessions;
    let Some(head) = sessions.head(key).await? else {
        shared.cache.remove(key);
        return Ok(Hydrated::default());
    };
    from_head(shared, key, head, Parse::Share).await
}

async fn from_head(
    shared: &Shared,
    key: &ConversationKey,
    head: Version,
    parse: Parse,
) -> Result<Hydrated> {
    let sessions = &shared.backend.sessions;
    if let Some(cached) = shared.cache.get(key, head, parse) {
        bump(&shared.counters.hydrate_cache_hits);
        let snapshot = cached.snapshot;
        let parsed = cached
            .parsed
            .unwrap_or_else(|| Arc::new(transcript::parse(&snapshot.transcript)));
        return Ok(Hydrated {
            version: Some(snapshot.version),
            run: Some(snapshot.run),
            transcript: snapshot.transcript,
            parsed,
        });
    }
    bump(&shared.counters.hydrate_reads);
    match sessions.hydrate(key).await? {
        Some(snapshot) => {
            add(
                &shared.counters.hydrate_bytes,
                snapshot.transcript.len() as u64,
            );
            let parsed = Arc::new(transcript::parse(&snapshot.transcript));
            // A turn keeps the parse to itself until its commit puts the next one back.
            let kept = (parse == Parse::Share).then(|| parsed.clone());
            shared.cache.put(
                key,
                snapshot.version,
                snapshot.run.clone(),
                snapshot.transcript.clone(),
                kept,
            );
            Ok(Hydrated {
                version: Some(snapshot.version),
                run: Some(snapshot.run),
                transcript: snapshot.transcript,
                parsed,
            })
        }
        // Cleared between the two reads.
        None => {
            shared.cache.remove(key);
            Ok(Hydrated::default())
        }
    }
}
