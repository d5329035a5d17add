-- lobu-store-pg, schema version 7: double texting and steering (`NewRun::multitask`,
-- `RunQueue::steerable`, `Commit::steered`). Same schema selection as version 1.
--
-- `steer` says the run was submitted with the `steer` strategy: the conversation's running
-- turn may take it into its own turn (lobu-core's `multitask::steerable` decides which, from
-- the conversation's unfinished runs; see src/multitask.rs). Runs written before this
-- version were never steer runs, which is what the default says. Adding a column with a
-- constant default rewrites nothing (PostgreSQL 11 and newer keep the default in the
-- catalogue). The other strategies need no column: they act at submit and leave ordinary
-- runs behind (cancelled ones carry the submitting run's id in their error).
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

ALTER TABLE runs ADD COLUMN steer boolean NOT NULL DEFAULT false;
