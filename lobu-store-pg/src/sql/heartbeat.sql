-- Renew the newest claim ($3 worker, $4 fence; $6, $7 the conversation's agent and id) by $5
-- microseconds: the run's claim and the conversation's lease get the same new expiry, in one
-- statement. Both rows are locked (run first, then conversation) before the expiry is
-- computed, so a heartbeat that waited for a row still gets its full lease from then.
WITH held AS MATERIALIZED (
    SELECT r.id FROM {s}.runs r
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4
       FOR UPDATE
), owner AS MATERIALIZED (
    SELECT c.org, c.agent, c.conversation FROM {s}.conversations c, held
     WHERE c.org = $1 AND c.agent = $6 AND c.conversation = $7 AND c.fence = $4
       FOR UPDATE OF c
), until AS MATERIALIZED (
    SELECT clock_timestamp() + $5 * interval '1 microsecond' AS at FROM owner
), lease AS (
    UPDATE {s}.conversations c
       SET lease_expires_at = until.at
      FROM owner o, until
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
)
UPDATE {s}.runs r
   SET claim_expires_at = until.at, updated_at = now()
  FROM held, until
 WHERE r.id = held.id
RETURNING r.claim_expires_at
