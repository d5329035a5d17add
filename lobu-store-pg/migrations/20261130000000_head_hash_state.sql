-- lobu-store-pg, schema version 4: the head's resumable SHA-256 state. Same schema selection
-- as version 1.
--
-- `head_state` is the state of the SHA-256 after the head's bytes (lobu-core's
-- `TranscriptHash::state`), so an append (`Persist::base_len`, `Commit::append`) digests only
-- the bytes it adds. NULL: no head, or a head written before this version; the first append
-- over such a head reads it once and hashes it, and every head it writes carries the state.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

ALTER TABLE conversations ADD COLUMN head_state bytea;
