-- Hand the run of the newest claim (checked and locked by held_claim.sql) back at once
-- without counting the attempt (graceful shutdown), and end the conversation's ownership,
-- in one statement; wake waiters on channel $7.
WITH {held_claim}, back AS (
    UPDATE {s}.runs r
       SET status = 'pending', attempts = r.attempts - 1, run_at = now(),
           claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id
), {end_ownership}
SELECT count(pg_notify($7, id)) FROM back
