-- The reaper: up to 100 lapsed claims (their worker died or stalled) that must not be
-- re-delivered. A run whose transcript is its conversation's head (`head_run`; only a
-- standalone persist can leave one there, complete commits both at once) is COMPLETED, at
-- any attempt, with that head as its committed version: it is never failed or run again.
-- Any other claim that lapsed on the last attempt FAILS for good. Either way the
-- conversation's next run becomes claimable. The store runs this on a timer, not before
-- every claim; `runs_claims_lapsing` makes finding nothing an index probe.
WITH lapsed AS (
    SELECT r.id,
           (SELECT c.head_seq FROM {s}.conversations c
             WHERE c.org = r.org AND c.agent = r.agent AND c.conversation = r.conversation
               AND c.head_run = r.id) AS head_seq
      FROM {s}.runs r
     WHERE r.status = 'running' AND r.claim_expires_at <= now()
       AND (r.attempts >= r.max_attempts
            OR EXISTS (SELECT 1 FROM {s}.conversations c
                        WHERE c.org = r.org AND c.agent = r.agent
                          AND c.conversation = r.conversation AND c.head_run = r.id))
     ORDER BY r.claim_expires_at
     LIMIT 100
       FOR UPDATE OF r SKIP LOCKED
), reaped AS (
    UPDATE {s}.runs r
       SET status = CASE WHEN l.head_seq IS NULL THEN 'failed' ELSE 'completed' END,
           error = CASE WHEN l.head_seq IS NULL
                        THEN format('the claim of attempt %s of %s expired (its worker '
                                    'stopped heartbeating)', r.attempts, r.max_attempts)
                        ELSE r.error END,
           committed_seq = l.head_seq,
           claimed_by = CASE WHEN l.head_seq IS NULL THEN NULL ELSE r.claimed_by END,
           claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM lapsed l
     WHERE r.id = l.id
    RETURNING r.id, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    SELECT org, agent, conversation, seq, id FROM reaped
), {lane_left}
-- Each reaped run's id is the payload: its followers on any replica wake.
SELECT count(pg_notify($1, id)) FROM reaped
