-- Renew the newest claim by $7 microseconds: the run's claim and the conversation's lease get
-- the same new expiry, in one statement. Both rows are locked (run first, then conversation;
-- see held_claim.sql) before the expiry is computed, so a heartbeat that waited for a row
-- still gets its full lease from then. A run whose cancellation was requested is not held
-- (held_claim.sql's `cancel_requested IS NULL`): nothing is extended, and the caller answers
-- `Cancelled`.
WITH {held_claim}, until AS MATERIALIZED (
    SELECT clock_timestamp() + $7 * interval '1 microsecond' AS at FROM owner
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
