-- A failed attempt of the newest claim ($3 worker, $4 fence; $8, $9 the conversation's agent
-- and id): back to pending after the run's retry delay while attempts remain, else terminal
-- with status $5. The claim is checked on the run (running, this worker, this fence) and on
-- the conversation (still this fence), rows locked run first then conversation; the
-- ownership ends (the lease expires now) in the same statement. Wakes waiters either way.
WITH held AS MATERIALIZED (
    SELECT r.id FROM {s}.runs r
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4
       FOR UPDATE
), owner AS MATERIALIZED (
    SELECT c.org, c.agent, c.conversation FROM {s}.conversations c, held
     WHERE c.org = $1 AND c.agent = $8 AND c.conversation = $9 AND c.fence = $4
       FOR UPDATE OF c
), failed AS (
    UPDATE {s}.runs r
       SET status      = CASE WHEN r.attempts < r.max_attempts THEN 'pending' ELSE $5 END,
           run_at      = CASE WHEN r.attempts < r.max_attempts
                              THEN now() + r.retry_delay_us * interval '1 microsecond'
                              ELSE r.run_at END,
           finished_at = CASE WHEN r.attempts < r.max_attempts THEN NULL ELSE now() END,
           error = $6, claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.status, r.run_at
), ended AS (
    UPDATE {s}.conversations c
       SET lease_expires_at = least(c.lease_expires_at, now())
      FROM owner o
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
)
SELECT status, run_at, count(pg_notify($7, '')) AS notified
  FROM failed
 GROUP BY status, run_at
