-- lobu-store-pg, schema version 5: run events (`RunQueue::record_events`, `read_events`,
-- `prune_events`). Same schema selection as version 1.
--
-- One row per event: the run's `seq` (1, 2, 3, ... across attempts, drawn under the run's
-- row lock, see src/sql/record_events.sql), the attempt that recorded it and the event's
-- JSON text byte for byte (`text`, not `jsonb`: events are kept exactly as recorded, key
-- order and whitespace included, and never looked into). The primary key serves every
-- access: a run's newest seq, a replay after a seq, the cascade from `runs`.
-- `ON DELETE CASCADE`: `prune_runs` drops a pruned run's events with it.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

CREATE TABLE run_events (
    run_id     text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq        bigint NOT NULL CHECK (seq > 0),
    attempt    integer NOT NULL CHECK (attempt >= 0),
    data       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
