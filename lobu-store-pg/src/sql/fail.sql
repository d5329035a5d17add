-- A failed attempt of the newest claim (checked and locked by held_claim.sql), decided as
-- lobu-core's `RunState::after_failure` decides it, in SQL: a run whose cancellation was
-- requested (`cancel_requested`) ends `cancelled` with that reason as its error, whatever the
-- failure says; a failure that is never retried ($11 false: `Retry::Never`) ends the run
-- with status $7; otherwise, while attempts remain, the run goes back to pending after $10
-- microseconds (NULL: the run's own `retry_delay_us`), else it ends with status $7. The
-- error is $8 (the reason, for a cancelled run). The ownership ends in the same statement.
-- Wakes waiters (channel $9) either way. The `CASE`s read the locked row's newest version.
WITH {held_claim}, failed AS (
    UPDATE {s}.runs r
       SET status      = CASE WHEN r.cancel_requested IS NOT NULL THEN 'cancelled'
                              WHEN $11 AND r.attempts < r.max_attempts THEN 'pending'
                              ELSE $7 END,
           run_at      = CASE WHEN r.cancel_requested IS NULL AND $11
                                   AND r.attempts < r.max_attempts
                              THEN now() + coalesce($10, r.retry_delay_us) * interval '1 microsecond'
                              ELSE r.run_at END,
           finished_at = CASE WHEN r.cancel_requested IS NULL AND $11
                                   AND r.attempts < r.max_attempts
                              THEN NULL ELSE now() END,
           error = coalesce(r.cancel_requested, $8),
           claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id, r.status, r.run_at, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    -- A retried run stays unfinished, in its lane.
    SELECT org, agent, conversation, seq, id FROM failed WHERE status <> 'pending'
), {lane_left}, {end_ownership}
SELECT status, run_at, count(pg_notify($9, id)) AS notified
  FROM failed
 GROUP BY status, run_at
