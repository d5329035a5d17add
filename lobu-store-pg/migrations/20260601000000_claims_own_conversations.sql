-- lobu-store-pg, schema version 3 (lobu-core contract v2): a run's claim is its
-- conversation's ownership. Same schema selection as version 1.
--
-- What changes in meaning, without a change of type:
--   * `runs.claim_token` now holds the claim's FENCE: the conversation's fence drawn from the
--     `fences` sequence when the run was claimed (it was a per-run counter). A claimed
--     conversation's row carries the same fence, and its `lease_expires_at` is the claim's
--     expiry, so leases (`try_acquire`) and claims exclude each other. Every claim-holder
--     call checks both: `runs.claim_token = fence AND conversations.fence = fence`.
--   * A completed run keeps `claimed_by` and `claim_token` (only `claim_expires_at` is
--     cleared), so a retried `complete` of the same claim is recognised after it succeeded.
--     The version-1 CHECK already allows that: it only ties `status = 'running'` to a
--     non-null `claim_expires_at` and `claimed_by`.
-- Rows written by version 2 need no rewrite: a run claimed under the old counter fails the
-- new fence check (its worker, an old process, must not write anyway), and once its claim
-- lapses the run is re-delivered under a real fence, as any lapsed claim is.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

-- The head version `complete` wrote (NULL: it wrote no transcript, or the run predates this
-- column), answered again to a retried `complete` whose first answer was lost.
ALTER TABLE runs ADD COLUMN committed_seq bigint;

-- The reaper's probe, "claims that lapsed", is an index range scan instead of a walk over
-- every unfinished run, so it stays cheap however long the queue is.
CREATE INDEX runs_claims_lapsing ON runs (claim_expires_at) WHERE status = 'running';
