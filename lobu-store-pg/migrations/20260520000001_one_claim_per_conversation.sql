-- lobu-store-pg, schema version 2: the database itself refuses a second claimed run of one
-- conversation. The claim statement already never hands one out (see src/sql/claim.sql); this
-- unique index turns any future mistake in it into a refused claim (a unique violation, which
-- the store reports as Conflict) instead of two turns of one conversation running at once.
-- Same schema selection as version 1.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

CREATE UNIQUE INDEX runs_one_claim_per_conversation ON runs (org, agent, conversation)
    WHERE status = 'running';
