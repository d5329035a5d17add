-- lobu-store-pg, schema version 6: run control (`RunQueue::cancel`). Same schema selection as
-- version 1.
--
-- `cancel_requested` is the reason of a cancellation requested while the run was claimed
-- (NULL: none). From then on the claim's heartbeat and commit are refused (`Cancelled`) and
-- its fail or release ends the run `cancelled` with this reason as its error (see
-- src/sql/cancel.sql). A run that was waiting, or whose claim had lapsed, is ended at once
-- and never gets one. Adding a nullable column without a default rewrites nothing.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

ALTER TABLE runs ADD COLUMN cancel_requested text;
