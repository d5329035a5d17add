-- Claims that lapsed on their last attempt (the worker died or stalled) fail for good instead
-- of being re-delivered; the conversation's next run becomes claimable.
WITH lapsed AS (
    SELECT id FROM {s}.runs
     WHERE status = 'running' AND claim_expires_at <= now() AND attempts >= max_attempts
     ORDER BY seq
     LIMIT 100
       FOR UPDATE SKIP LOCKED
), failed AS (
    UPDATE {s}.runs r
       SET status = 'failed',
           error = 'the claim lapsed on the last attempt (its worker died or stalled)',
           claimed_by = NULL, claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM lapsed
     WHERE r.id = lapsed.id
    RETURNING r.id
)
SELECT count(pg_notify($1, '')) FROM failed
