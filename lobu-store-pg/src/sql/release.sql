-- Hand the run of the newest claim (checked and locked by held_claim.sql) back at once
-- without counting the attempt (graceful shutdown), and end the conversation's ownership,
-- in one statement; wake waiters on channel $7. A run whose cancellation was requested
-- (`cancel_requested`) is not handed back: it ends `cancelled` with that reason as its error.
WITH {held_claim}, back AS (
    UPDATE {s}.runs r
       SET status = CASE WHEN r.cancel_requested IS NULL THEN 'pending' ELSE 'cancelled' END,
           attempts = CASE WHEN r.cancel_requested IS NULL THEN r.attempts - 1
                           ELSE r.attempts END,
           run_at = CASE WHEN r.cancel_requested IS NULL THEN now() ELSE r.run_at END,
           finished_at = CASE WHEN r.cancel_requested IS NULL THEN NULL ELSE now() END,
           error = coalesce(r.cancel_requested, r.error),
           claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id, r.status, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    -- A run handed back stays unfinished, in its lane.
    SELECT org, agent, conversation, seq, id FROM back WHERE status <> 'pending'
), {lane_left}, {end_ownership}
SELECT count(pg_notify($7, id)) FROM back
