-- A failed attempt of the newest claim (checked and locked by held_claim.sql): back to
-- pending after the run's retry delay while attempts remain, else terminal with status $7
-- and error $8. The ownership ends in the same statement. Wakes waiters (channel $9) either
-- way.
WITH {held_claim}, failed AS (
    UPDATE {s}.runs r
       SET status      = CASE WHEN r.attempts < r.max_attempts THEN 'pending' ELSE $7 END,
           run_at      = CASE WHEN r.attempts < r.max_attempts
                              THEN now() + r.retry_delay_us * interval '1 microsecond'
                              ELSE r.run_at END,
           finished_at = CASE WHEN r.attempts < r.max_attempts THEN NULL ELSE now() END,
           error = $8, claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id, r.status, r.run_at
), {end_ownership}
SELECT status, run_at, count(pg_notify($9, id)) AS notified
  FROM failed
 GROUP BY status, run_at
