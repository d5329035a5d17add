//! Conversations move between memory, files and PostgreSQL byte for byte: a conversation
//! written by real turns in one store, exported, imported into another and exported again
//! gives the same document.

mod common;

use bytes::Bytes;
use lobu_core::export::{Exported, Imported};
use lobu_core::memory::MemoryBackend;
use lobu_core::{Backend, ConversationKey, OrgId, Persist, RunId, TerminalStatus, Version};
use sqlx::PgPool;

use common::{file_store, key};

/// Write `turns` completed turns to `key` under a lease, the last few as appends.
async fn write_turns(backend: &Backend, key: &ConversationKey, turns: usize) {
    let lease = backend
        .locks
        .try_acquire(key, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut head: Option<(Version, usize)> = None;
    let all = common::transcript(key.conversation.as_str(), turns);
    let cuts: Vec<usize> = (1..=turns).map(|t| all.len() * t / turns).collect();
    for cut in cuts {
        let cut = all[..cut]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(cut, |i| i + 1);
        let (transcript, base_len) = match head {
            Some((_, len)) if len > 0 => (Bytes::copy_from_slice(&all[len..cut]), Some(len)),
            _ => (Bytes::copy_from_slice(&all[..cut]), None),
        };
        let write = Persist {
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            transcript,
            expected: head.map(|(v, _)| v),
            fence: lease.fence,
            base_len,
        };
        let version = backend.sessions.persist(key, write).await.unwrap();
        head = Some((version, cut));
    }
    backend.locks.release(&lease).await.unwrap();
}

fn moved(conversation: &Exported, org: &str) -> Exported {
    let key = &conversation.key;
    Exported {
        key: ConversationKey::new(
            OrgId::new(org).unwrap(),
            key.agent.clone(),
            key.conversation.clone(),
        ),
        ..conversation.clone()
    }
}

async fn export_all(backend: &Backend, keys: &[ConversationKey]) -> Vec<Exported> {
    let mut out = Vec::new();
    for key in keys {
        out.push(backend.sessions.export(key).await.unwrap().expect("a head"));
    }
    out
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn conversations_round_trip_between_memory_files_and_postgres_byte_for_byte(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Backend); 3] = [
        ("memory", MemoryBackend::new().into_backend()),
        ("file", file_store(dir.path()).await),
        ("pg", lobu_store_pg::PgStore::new(pool).into_backend()),
    ];
    for (from_name, from) in &stores {
        let keys: Vec<ConversationKey> = ["short", "long / ü", "crlf"]
            .iter()
            .map(|c| key(&format!("written-in-{from_name}"), "bot", c))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            write_turns(from, key, 1 + 4 * i).await;
        }
        let exported = export_all(from, &keys).await;
        for (to_name, to) in &stores {
            let org = format!("{from_name}-to-{to_name}");
            for conversation in &exported {
                let target = moved(conversation, &org);
                let imported = to.sessions.import(&target).await.unwrap();
                assert_eq!(
                    imported,
                    Imported::Written(conversation.version),
                    "{from_name} → {to_name}"
                );
                let back = to.sessions.export(&target.key).await.unwrap().unwrap();
                assert_eq!(
                    back.to_document(),
                    target.to_document(),
                    "{from_name} → {to_name}: {}",
                    conversation.key
                );
                let hydrated = to.sessions.hydrate(&target.key).await.unwrap().unwrap();
                assert_eq!(hydrated.transcript, conversation.transcript);
            }
        }
    }
}
