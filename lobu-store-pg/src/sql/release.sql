-- Hand the run of the newest claim ($3 worker, $4 fence; $6, $7 the conversation's agent and
-- id) back at once without counting the attempt (graceful shutdown), and end the
-- conversation's ownership, in one statement. Checked and locked as fail.sql does.
WITH held AS MATERIALIZED (
    SELECT r.id FROM {s}.runs r
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4
       FOR UPDATE
), owner AS MATERIALIZED (
    SELECT c.org, c.agent, c.conversation FROM {s}.conversations c, held
     WHERE c.org = $1 AND c.agent = $6 AND c.conversation = $7 AND c.fence = $4
       FOR UPDATE OF c
), back AS (
    UPDATE {s}.runs r
       SET status = 'pending', attempts = r.attempts - 1, run_at = now(),
           claimed_by = NULL, claim_expires_at = NULL, updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id
), ended AS (
    UPDATE {s}.conversations c
       SET lease_expires_at = least(c.lease_expires_at, now())
      FROM owner o
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
)
SELECT count(pg_notify($5, '')) FROM back
