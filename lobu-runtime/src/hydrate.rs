//! Reading a conversation's head through the cache.

use std::time::Instant;

use bytes::Bytes;
use lobu_core::{ConversationKey, Result, RunId, Version};

use crate::metrics::{add, add_time, bump};
use crate::runtime::Shared;

/// A conversation's head as a turn starts from it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hydrated {
    /// `None`: the conversation has no completed transcript.
    pub(crate) version: Option<Version>,
    /// The run that wrote the head.
    pub(crate) run: Option<RunId>,
    pub(crate) transcript: Bytes,
}

/// The head of `key`. A cheap version check first: when the cache holds exactly the head
/// version, the transcript is not read again (lobu re-read the whole transcript every turn).
pub(crate) async fn hydrate(shared: &Shared, key: &ConversationKey) -> Result<Hydrated> {
    let started = Instant::now();
    let result = read(shared, key).await;
    add_time(&shared.counters.hydrate_micros, started.elapsed());
    result
}

/// The head of a claimed conversation, whose head version the claim reported: nobody else
/// can move the head while the claim is held, so no version check is needed, and with the
/// cache holding that version nothing is read at all (0 round trips; else 1).
pub(crate) async fn hydrate_claimed(
    shared: &Shared,
    key: &ConversationKey,
    head: Option<Version>,
) -> Result<Hydrated> {
    let started = Instant::now();
    let result = match head {
        Some(head) => from_head(shared, key, head).await,
        None => {
            shared.cache.remove(key);
            Ok(Hydrated::default())
        }
    };
    add_time(&shared.counters.hydrate_micros, started.elapsed());
    result
}

async fn read(shared: &Shared, key: &ConversationKey) -> Result<Hydrated> {
    let sessions = &shared.backend.sessions;
    let Some(head) = sessions.head(key).await? else {
        shared.cache.remove(key);
        return Ok(Hydrated::default());
    };
    from_head(shared, key, head).await
}

async fn from_head(shared: &Shared, key: &ConversationKey, head: Version) -> Result<Hydrated> {
    let sessions = &shared.backend.sessions;
    if let Some(cached) = shared.cache.get(key, head) {
        bump(&shared.counters.hydrate_cache_hits);
        return Ok(Hydrated {
            version: Some(cached.version),
            run: Some(cached.run),
            transcript: cached.transcript,
        });
    }
    bump(&shared.counters.hydrate_reads);
    match sessions.hydrate(key).await? {
        Some(snapshot) => {
            add(
                &shared.counters.hydrate_bytes,
                snapshot.transcript.len() as u64,
            );
            shared.cache.put(
                key,
                snapshot.version,
                snapshot.run.clone(),
                snapshot.transcript.clone(),
            );
            Ok(Hydrated {
                version: Some(snapshot.version),
                run: Some(snapshot.run),
                transcript: snapshot.transcript,
            })
        }
        // Cleared between the two reads.
        None => {
            shared.cache.remove(key);
            Ok(Hydrated::default())
        }
    }
}
