-- Cancel the runs $2 (text[]: `cancel` passes one, a submit's multitask strategy the runs
-- its plan names) of org $1 with reason $3 (already cut, never empty), in one statement:
-- lobu-core's `control::cancel_outcome` in SQL. Each run is locked first (as every claim
-- holder's statement locks it), then decided on its newest version:
-- * pending (waiting, or waiting out a retry delay): ended `cancelled` now;
-- * running under a live claim: marked (`cancel_requested` = $3); the claim holder is told
--   at its next heartbeat, its commit is refused, and its fail or release ends the run;
-- * running under a lapsed claim: ended `cancelled` now, and the conversation's ownership
--   under that claim's fence ends (a no-op unless the lease outlived the claim);
-- * finished: left as it is.
-- Ending a run clears its claim like fail.sql does (the table's CHECKs: only a running run
-- has a holder and an expiry, only an unfinished one has no `finished_at`). A run that was
-- ended or marked wakes its followers and workers (channel $4). Returns, per run, its id, its
-- status before and what was done ('cancelled', 'requested' or 'finished'); no row for a run
-- this org does not have.
WITH target AS MATERIALIZED (
    SELECT r.id, r.org, r.agent, r.conversation, r.status, r.claim_token,
           CASE WHEN r.status = 'pending' THEN 'cancelled'
                WHEN r.status = 'running' AND r.claim_expires_at > now() THEN 'requested'
                WHEN r.status = 'running' THEN 'cancelled'
                ELSE 'finished' END AS outcome
      FROM {s}.runs r
     WHERE r.org = $1 AND r.id = ANY($2)
       FOR UPDATE
), ended AS (
    UPDATE {s}.runs r
       SET status = 'cancelled', error = $3, claimed_by = NULL, claim_expires_at = NULL,
           finished_at = now(), updated_at = now()
      FROM target t
     WHERE r.id = t.id AND t.outcome = 'cancelled'
    RETURNING r.id, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    SELECT org, agent, conversation, seq, id FROM ended
), {lane_left}, requested AS (
    UPDATE {s}.runs r
       SET cancel_requested = $3, updated_at = now()
      FROM target t
     WHERE r.id = t.id AND t.outcome = 'requested'
    RETURNING r.id
), released AS (
    UPDATE {s}.conversations c
       SET lease_expires_at = least(c.lease_expires_at, now())
      FROM target t
     WHERE t.status = 'running' AND t.outcome = 'cancelled'
       AND c.org = t.org AND c.agent = t.agent AND c.conversation = t.conversation
       AND c.fence = t.claim_token
), changed AS (
    SELECT id FROM ended UNION ALL SELECT id FROM requested
)
SELECT t.id, t.status, t.outcome, (SELECT count(pg_notify($4, id)) FROM changed) AS notified
  FROM target t
