-- The claim statement of schema versions 3 to 7 (src/sql/claim.sql before lanes), kept for
-- the upgrade tests: it claims runs in a database that has not migrated to lanes yet, in
-- schema `lobu`. $1 is the worker, $2 the lease in microseconds.
WITH next AS (
    SELECT r.id, r.org, r.agent, r.conversation
      FROM lobu.runs r
     WHERE r.status IN ('pending', 'running')
       AND CASE r.status
               WHEN 'pending' THEN r.run_at <= now()
               ELSE r.claim_expires_at <= now() AND r.attempts < r.max_attempts
           END
       AND NOT EXISTS (
               SELECT 1 FROM lobu.runs e
                WHERE e.org = r.org AND e.agent = r.agent AND e.conversation = r.conversation
                  AND e.status IN ('pending', 'running') AND e.seq < r.seq)
       AND NOT EXISTS (
               SELECT 1 FROM lobu.conversations c
                WHERE c.org = r.org AND c.agent = r.agent AND c.conversation = r.conversation
                  AND (c.lease_expires_at > now()
                       OR (r.status = 'running' AND c.head_run = r.id)))
     ORDER BY r.seq
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), owner AS (
    INSERT INTO lobu.conversations AS c (org, agent, conversation, fence, lease_expires_at)
    SELECT next.org, next.agent, next.conversation, nextval('lobu.fences'),
           clock_timestamp() + $2 * interval '1 microsecond'
      FROM next
    ON CONFLICT (org, agent, conversation) DO UPDATE
       SET fence = nextval('lobu.fences'),
           lease_expires_at = clock_timestamp() + $2 * interval '1 microsecond'
     WHERE c.lease_expires_at <= clock_timestamp()
    RETURNING c.fence, c.lease_expires_at, c.head_seq, c.head_state
)
UPDATE lobu.runs r
   SET status = 'running', attempts = r.attempts + 1, claimed_by = $1,
       claim_token = owner.fence,
       error = CASE WHEN r.status = 'running'
                    THEN format('the claim of attempt %s expired (its worker stopped '
                                'heartbeating); re-delivered', r.attempts)
                    ELSE r.error END,
       claim_expires_at = owner.lease_expires_at, updated_at = now()
  FROM next, owner
 WHERE r.id = next.id
RETURNING r.id, r.org, r.agent, r.conversation, r.kind, r.payload, r.attempts,
          r.max_attempts, r.claim_token AS fence, r.claim_expires_at, owner.head_seq,
          owner.head_state
