-- A failed attempt of the newest claim ($3 worker, $4 token): back to pending after the run's
-- retry delay while attempts remain, else terminal with status $5. Wakes waiters either way.
WITH failed AS (
    UPDATE {s}.runs r
       SET status      = CASE WHEN r.attempts < r.max_attempts THEN 'pending' ELSE $5 END,
           run_at      = CASE WHEN r.attempts < r.max_attempts
                              THEN now() + r.retry_delay_us * interval '1 microsecond'
                              ELSE r.run_at END,
           finished_at = CASE WHEN r.attempts < r.max_attempts THEN NULL ELSE now() END,
           error = $6, claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4
    RETURNING r.status, r.run_at
)
SELECT status, run_at, count(pg_notify($7, '')) AS notified
  FROM failed
 GROUP BY status, run_at
