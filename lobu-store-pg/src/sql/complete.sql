-- Complete the run of the newest claim ($3 worker, $4 fence; $8, $9 the conversation's agent
-- and id) with output $5 and committed version $6 (NULL: no transcript), end the
-- conversation's ownership and wake waiters, in one statement. Checked and locked as
-- fail.sql does. The run keeps `claimed_by` and `claim_token`, so a retry of this claim's
-- commit is recognised afterwards. Nothing matched (count 0): the caller finds out why.
WITH held AS MATERIALIZED (
    SELECT r.id FROM {s}.runs r
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4
       FOR UPDATE
), owner AS MATERIALIZED (
    SELECT c.org, c.agent, c.conversation FROM {s}.conversations c, held
     WHERE c.org = $1 AND c.agent = $8 AND c.conversation = $9 AND c.fence = $4
       FOR UPDATE OF c
), done AS (
    UPDATE {s}.runs r
       SET status = 'completed', output = $5, committed_seq = $6,
           claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM held, owner
     WHERE r.id = held.id
    RETURNING r.id
), ended AS (
    UPDATE {s}.conversations c
       SET lease_expires_at = least(c.lease_expires_at, now())
      FROM owner o
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
)
SELECT count(pg_notify($7, '')) FROM done
