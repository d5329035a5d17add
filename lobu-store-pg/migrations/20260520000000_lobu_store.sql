-- lobu-store-pg, schema version 1: conversations (leases and heads), snapshots, runs.
--
-- Every name below is unqualified on purpose. The first statement pins `search_path`, for this
-- migration's transaction only, to the schema `PgStore::migrate()` was configured with (it
-- passes it in the custom setting `lobu.schema`; the default, and what the static `MIGRATOR`
-- used by `#[sqlx::test]` gets, is `lobu`). One set of embedded migrations thus serves any
-- schema name, and the tracking table (`<schema>._sqlx_migrations`) lives beside the tables,
-- so a host application's own sqlx migrations never see ours.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

-- Fences and versions come from sequences rather than per-row counters, so both keep growing
-- even after prune() deletes a conversation's row: a zombie's fence or a cached version can
-- never match a later conversation that reuses the key. Within one conversation they are
-- drawn while its row is locked, so they grow in commit order.
CREATE SEQUENCE fences AS bigint;
CREATE SEQUENCE versions AS bigint;

-- One row per conversation: its lease (the newest fence and when it lapses) and its head
-- (the latest completed snapshot and the delta chain behind it). persist() locks this row
-- FOR UPDATE and checks the fence in the same transaction as the snapshot write.
-- COLLATE "C": keys compare byte-wise, so listing order and cursors match Rust's `str` order.
CREATE TABLE conversations (
    org              text COLLATE "C" NOT NULL,
    agent            text COLLATE "C" NOT NULL,
    conversation     text COLLATE "C" NOT NULL,
    fence            bigint NOT NULL,
    lease_expires_at timestamptz NOT NULL,              -- release sets it to now()
    head_seq         bigint,                            -- NULL: no head (never written, or cleared)
    head_run         text COLLATE "C",
    head_bytes       bigint NOT NULL DEFAULT 0,         -- length of the head transcript
    head_digest      bytea,                             -- SHA-256 of the head transcript
    base_seq         bigint,                            -- the whole copy the head's chain starts at
    base_bytes       bigint NOT NULL DEFAULT 0,
    chain_deltas     integer NOT NULL DEFAULT 0,        -- deltas stored after that whole copy
    chain_bytes      bigint NOT NULL DEFAULT 0,         -- and their bytes
    turns            bigint NOT NULL DEFAULT 0,         -- completed runs since the last clear
    title            text,
    updated_at       timestamptz NOT NULL DEFAULT now(),  -- when the head last changed
    PRIMARY KEY (org, agent, conversation),
    CHECK ((head_seq IS NULL) = (base_seq IS NULL)),
    CHECK (head_seq IS NULL OR (base_seq <= head_seq AND head_digest IS NOT NULL))
) WITH (fillfactor = 80);  -- room for HOT updates: leases and heads rewrite this row often

CREATE INDEX conversations_idle ON conversations (updated_at) WHERE head_seq IS NOT NULL;
CREATE INDEX conversations_spent ON conversations (lease_expires_at) WHERE head_seq IS NULL;

-- Snapshots, keyed by org, agent, conversation and run; `seq` is the version hydrate orders
-- by (never the run id, lobu G4). A whole copy has `base_seq = seq`; a delta holds only the
-- bytes a turn appended to the previous completed snapshot of its chain, starting at
-- `start_offset`. Hydrate concatenates the head's chain (its base and the deltas after it) in
-- one query. When a new whole copy becomes the head, the older completed rows' `bytes` are
-- dropped (set NULL): nothing can read them any more, but their row stays as the run's record
-- (status, size, digest, time), so a late retry of that run is still recognised.
-- No foreign key to runs: transcript lifetime never depends on run retention (lobu G1).
-- Non-completed snapshots are whole copies, kept for forensics and never hydrated.
CREATE TABLE snapshots (
    org          text COLLATE "C" NOT NULL,
    agent        text COLLATE "C" NOT NULL,
    conversation text COLLATE "C" NOT NULL,
    seq          bigint NOT NULL,
    run          text COLLATE "C" NOT NULL,
    status       text NOT NULL CHECK (status IN ('completed', 'failed', 'timeout', 'cancelled')),
    base_seq     bigint NOT NULL,
    start_offset bigint NOT NULL,
    bytes        bytea,                                 -- NULL: superseded, content dropped
    byte_size    bigint NOT NULL,                       -- the whole transcript's length
    digest       bytea NOT NULL,                        -- SHA-256 of the whole transcript
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, agent, conversation, seq),
    CHECK (bytes IS NULL OR start_offset + octet_length(bytes) = byte_size),
    CHECK (bytes IS NOT NULL OR status = 'completed'),
    CHECK (base_seq <= seq AND (base_seq < seq OR start_offset = 0)),
    CHECK (status = 'completed' OR base_seq = seq)
);

CREATE INDEX snapshots_by_run ON snapshots (org, agent, conversation, run, seq);
CREATE INDEX snapshots_forensic_age ON snapshots (created_at) WHERE status <> 'completed';

-- Column compression, chosen on purpose. Measured on this project's PostgreSQL 15 with a
-- 1 MiB JSON Lines transcript (3.3x with gzip), 20 rows per insert:
--   pglz (the server default): ~23 ms per MiB written, ~1.5-2 ms read, 52% of raw size;
--   lz4:                        ~4.5-6 ms written,    ~0.4 ms read,     47% of raw size;
--   none (STORAGE EXTERNAL):    ~3.5-4 ms written,    ~0.3 ms read,    100%.
-- (The issue's own 1 MB numbers: pglz 11.7 ms, lz4 2.4 ms, none 2.2 ms.) lz4 stores half the
-- bytes for a few percent more CPU than no compression, where pglz costs 4-5x more on every
-- whole copy for no better ratio. Deltas under ~2 kB stay inline and uncompressed either way.
-- A server built without lz4 keeps pglz rather than failing the migration.
DO $$
BEGIN
    ALTER TABLE snapshots ALTER COLUMN bytes SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lobu-store-pg: server built without lz4, snapshots keep pglz compression';
END
$$;

-- The run queue. `seq` is submit order; per conversation, submits are serialised (a
-- transaction-scoped advisory lock), so `seq` order is also commit order and a claimer that
-- sees a run sees every earlier run of its conversation.
CREATE TABLE runs (
    id               text COLLATE "C" PRIMARY KEY,
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    org              text COLLATE "C" NOT NULL,
    agent            text COLLATE "C" NOT NULL,
    conversation     text COLLATE "C" NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('turn', 'reset')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'timeout', 'cancelled')),
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    idempotency_key  text COLLATE "C",
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    retry_delay_us   bigint NOT NULL CHECK (retry_delay_us >= 0),
    run_at           timestamptz NOT NULL DEFAULT now(),  -- not claimable before
    claimed_by       text,
    claim_token      bigint NOT NULL DEFAULT 0,           -- grows on every claim
    claim_expires_at timestamptz,
    error            text,
    output           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK ((status = 'running') = (claimed_by IS NOT NULL AND claim_expires_at IS NOT NULL)),
    CHECK ((status IN ('pending', 'running')) = (finished_at IS NULL))
);

CREATE UNIQUE INDEX runs_idempotency ON runs (org, agent, conversation, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- "Is an earlier run of this conversation unfinished?" (FIFO and one claim at a time).
CREATE INDEX runs_unfinished ON runs (org, agent, conversation, seq)
    WHERE status IN ('pending', 'running');
-- The claim scan, oldest first.
CREATE INDEX runs_claimable ON runs (seq) WHERE status IN ('pending', 'running');
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
