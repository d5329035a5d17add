//! Two replicas (independent pools, threads and runtimes) contending for one conversation:
//! exactly one holds the lease at a time, no turn is lost, and a zombie's late write with its
//! old fence is refused.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lobu_core::{ConversationLocks, ErrorKind, RunId, SessionStore, TerminalStatus};
use lobu_store_pg::PgStore;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{assert_kind, exchange, key, lease, replica_pool, write, writer};

/// One replica: its own thread, runtime and pool. Loops `attempts` times: take the lease if
/// free, then (while holding it) hydrate, append one exchange and persist against the
/// hydrated version; returns how many turns it wrote.
fn replica(id: u32, options: PgConnectOptions, holder: Arc<AtomicU32>, attempts: u32) -> u32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .expect("pool");
        let store = PgStore::new(pool);
        let k = key("acme", "bot", "contended");
        let mut turns = 0;
        for _ in 0..attempts {
            let Some(lease) = store
                .try_acquire(&k, Duration::from_secs(30))
                .await
                .expect("try_acquire")
            else {
                tokio::task::yield_now().await;
                continue;
            };
            let previous = holder.swap(id, Ordering::SeqCst);
            assert_eq!(
                previous, 0,
                "replica {id} got the lease while {previous} held it"
            );
            let head = store.hydrate(&k).await.expect("hydrate");
            let mut w = match &head {
                Some(h) => {
                    lobu_core::transcript::TranscriptWriter::open(h.transcript.to_vec(), "/w")
                }
                None => writer(),
            };
            exchange(&mut w, u64::from(id) * 1000 + u64::from(turns));
            let run = RunId::generate();
            let next = write(
                &lease,
                &run,
                TerminalStatus::Completed,
                &w.bytes(),
                head.map(|h| h.version),
            );
            store.persist(&k, next).await.expect("the holder's write");
            turns += 1;
            // Clear the marker before giving the lease up, so the next holder finds it clear.
            holder.store(0, Ordering::SeqCst);
            store.release(&lease).await.expect("release");
        }
        turns
    })
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn two_replicas_hold_one_conversations_lease_one_at_a_time(pool: PgPool) {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let holder = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = [1, 2]
        .into_iter()
        .map(|id| {
            let (options, holder) = (options.clone(), holder.clone());
            std::thread::spawn(move || replica(id, options, holder, 60))
        })
        .collect();
    let written: u32 = threads
        .into_iter()
        .map(|t| t.join().expect("replica thread"))
        .sum();
    assert!(written > 0);
    // Every turn both replicas wrote is in the final transcript: none was lost to a race.
    let store = PgStore::new(pool);
    let head = store
        .hydrate(&key("acme", "bot", "contended"))
        .await
        .expect("hydrate");
    let parsed = lobu_core::transcript::parse(&head.expect("a head").transcript);
    let users = parsed
        .entries()
        .iter()
        .filter(|e| e.message().and_then(|m| m.role()) == Some("user"))
        .count();
    assert_eq!(users, written as usize, "one user message per written turn");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn the_losers_late_write_with_its_old_fence_is_refused(pool: PgPool) {
    let a = PgStore::new(pool.clone());
    let b = PgStore::new(replica_pool(&pool, 2).await);
    let k = key("acme", "bot", "zombie");
    // Race with long leases, so a loaded machine cannot let the winner's lapse before the
    // "exactly one wins" and "busy" checks; the winner shortens its lease afterwards.
    let (first, second) = tokio::join!(
        a.try_acquire(&k, support::LONG),
        b.try_acquire(&k, support::LONG)
    );
    let (first, second) = (first.expect("a"), second.expect("b"));
    assert!(
        first.is_some() != second.is_some(),
        "exactly one replica wins"
    );
    let (zombie_store, zombie, successor_store) = match (first, second) {
        (Some(lease), None) => (&a, lease, &b),
        (None, Some(lease)) => (&b, lease, &a),
        _ => unreachable!("checked above"),
    };
    assert_eq!(
        successor_store
            .try_acquire(&k, support::LONG)
            .await
            .expect("busy"),
        None
    );

    // The winner stalls past its lease; the other replica takes over and writes.
    let zombie = zombie_store
        .renew(&zombie, Duration::from_millis(300))
        .await
        .expect("the winner shortens its lease");
    let mut w = writer();
    exchange(&mut w, 1);
    let stale_bytes = w.bytes();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let successor = lease(successor_store, &k).await;
    assert!(successor.fence > zombie.fence);
    let mut fresh = writer();
    exchange(&mut fresh, 2);
    let run = RunId::generate();
    let v = successor_store
        .persist(
            &k,
            write(
                &successor,
                &run,
                TerminalStatus::Completed,
                &fresh.bytes(),
                None,
            ),
        )
        .await
        .expect("the new holder writes");

    // The zombie wakes up and writes with its old fence: refused, nothing changes.
    let late = write(
        &zombie,
        &RunId::generate(),
        TerminalStatus::Completed,
        &stale_bytes,
        None,
    );
    assert_kind(
        zombie_store.persist(&k, late).await,
        ErrorKind::Fenced,
        "zombie write",
    );
    let late = write(
        &zombie,
        &RunId::generate(),
        TerminalStatus::Completed,
        &stale_bytes,
        Some(v),
    );
    assert_kind(
        zombie_store.persist(&k, late).await,
        ErrorKind::Fenced,
        "zombie on the new head",
    );
    assert_kind(
        zombie_store.renew(&zombie, support::LONG).await,
        ErrorKind::Fenced,
        "renew",
    );
    zombie_store
        .release(&zombie)
        .await
        .expect("a stale release is Ok");
    assert_eq!(
        zombie_store
            .try_acquire(&k, support::LONG)
            .await
            .expect("still held"),
        None
    );
    let head = zombie_store
        .hydrate(&k)
        .await
        .expect("hydrate")
        .expect("head");
    assert_eq!((head.version, head.transcript), (v, fresh.bytes()));
}
