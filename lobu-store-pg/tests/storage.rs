//! What a conversation costs on disk: 100 realistic turns against lobu's whole copy per turn,
//! and the column compression of whole copies. Run with `--nocapture` to see the figures.

mod support;

use lobu_core::SessionStore;
use lobu_store_pg::PgStore;
use sqlx::PgPool;
use support::{exchange, key, lease, turn, writer};

#[derive(Debug, sqlx::FromRow)]
struct Stored {
    rows: i64,
    rows_with_bytes: i64,
    whole_copies: i64,
    logical_bytes: i64,
    compressed_bytes: i64,
    row_bytes: i64,
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn storage_after_100_turns_is_a_fraction_of_a_whole_copy_per_turn(pool: PgPool) {
    const TURNS: u64 = 100;
    let store = PgStore::new(pool.clone());
    let k = key("acme", "support-bot", "slack:C024BE91L:1700000000.000100");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    let mut expected = None;
    let mut whole_copy_per_turn = 0usize; // what lobu stores: every turn's full transcript
    for n in 0..TURNS {
        exchange(&mut w, n);
        expected = Some(turn(&store, &lease, expected, &w.bytes()).await);
        whole_copy_per_turn += w.len();
    }
    let head = store.hydrate(&k).await.expect("hydrate").expect("head");
    assert!(
        head.transcript == w.bytes(),
        "the 100th turn hydrates exactly"
    );
    let transcript = w.len();

    let stored: Stored = sqlx::query_as(
        "SELECT count(*) AS rows,
                count(bytes) AS rows_with_bytes,
                count(*) FILTER (WHERE base_seq = seq) AS whole_copies,
                coalesce(sum(octet_length(bytes)), 0)::bigint AS logical_bytes,
                coalesce(sum(pg_column_size(bytes)), 0)::bigint AS compressed_bytes,
                sum(pg_column_size(s.*) - coalesce(pg_column_size(bytes), 0))::bigint AS row_bytes
           FROM lobu.snapshots s
          WHERE org = $1 AND agent = $2 AND conversation = $3",
    )
    .bind(k.org.as_str())
    .bind(k.agent.as_str())
    .bind(k.conversation.as_str())
    .fetch_one(&pool)
    .await
    .expect("measure");
    let on_disk: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('lobu.snapshots')")
        .fetch_one(&pool)
        .await
        .expect("relation size");
    let ours = usize::try_from(stored.compressed_bytes + stored.row_bytes).expect("size");
    println!(
        "after {TURNS} turns: transcript {transcript} B; lobu (whole copy per turn) \
         {whole_copy_per_turn} B; lobu-store-pg: {} rows ({} whole copies, {} with bytes), \
         {} B of transcript bytes kept, {} B after lz4, {} B of row data besides, \
         {ours} B in all = {:.2}x the transcript, {:.1}% of lobu's; \
         snapshots table with its TOAST and indexes: {on_disk} B",
        stored.rows,
        stored.whole_copies,
        stored.rows_with_bytes,
        stored.logical_bytes,
        stored.compressed_bytes,
        stored.row_bytes,
        ours as f64 / transcript as f64,
        100.0 * ours as f64 / whole_copy_per_turn as f64,
    );
    assert_eq!(stored.rows, TURNS as i64, "one row per run");
    assert!(
        stored.logical_bytes as usize <= 2 * transcript,
        "kept bytes stay within twice the transcript: {stored:?}"
    );
    assert!(
        ours * 10 < whole_copy_per_turn,
        "storage {ours} B is not well below lobu's {whole_copy_per_turn} B"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn whole_copies_are_compressed_with_lz4(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "compressed");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    for n in 0..40 {
        exchange(&mut w, n);
    }
    turn(&store, &lease, None, &w.bytes()).await;
    let (method, raw, stored): (Option<String>, i64, i64) = sqlx::query_as(
        "SELECT pg_column_compression(bytes), octet_length(bytes)::bigint, \
                pg_column_size(bytes)::bigint \
           FROM lobu.snapshots WHERE conversation = $1",
    )
    .bind(k.conversation.as_str())
    .fetch_one(&pool)
    .await
    .expect("compression");
    assert_eq!(
        method.as_deref(),
        Some("lz4"),
        "{raw} B stored as {stored} B"
    );
    assert!(stored < raw, "{raw} B stored as {stored} B");
}
