-- Complete the run of the newest claim (checked and locked by held_claim.sql) with output $7
-- and committed version $8 (NULL: no transcript), end the conversation's ownership and wake
-- waiters (channel $9), in one statement. The run keeps `claimed_by` and `claim_token`, so a
-- retry of this claim's commit is recognised afterwards. A run whose cancellation was
-- requested is not held (held_claim.sql's `cancel_requested IS NULL`). Nothing matched
-- (count 0): the caller finds out why (`Cancelled`, `Fenced`, ...).
WITH {held_claim}, done AS (
    UPDATE {s}.runs r
       SET status = 'completed', output = $7, committed_seq = $8,
           claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    SELECT org, agent, conversation, seq, id FROM done
), {lane_left}, {end_ownership}
SELECT count(pg_notify($9, id)) FROM done
