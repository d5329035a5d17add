-- Claim the oldest runnable run: the oldest unfinished run of its conversation (FIFO, and a
-- conversation with a claimed or retry-waiting run has nothing else claimable) that is
-- pending and due, or claimed with a lapsed lease and attempts left (re-delivery).
--
-- Under READ COMMITTED this is safe against concurrent claimers: SKIP LOCKED passes over a
-- run another claimer is taking; a run whose row changed after our snapshot is re-checked on
-- its newest version (status, due time, lease), so it is claimed only if still claimable. The
-- NOT EXISTS reads our snapshot, which is enough: unfinished runs only become finished, and
-- submits of one conversation commit in `seq` order, so "no earlier unfinished run" stays true.
-- The claim's lease runs from clock_timestamp(), not the statement's start, so time spent
-- finding and locking the run never shortens it.
WITH next AS (
    SELECT r.id
      FROM {s}.runs r
     WHERE r.status IN ('pending', 'running')
       AND CASE r.status
               WHEN 'pending' THEN r.run_at <= now()
               ELSE r.claim_expires_at <= now() AND r.attempts < r.max_attempts
           END
       AND NOT EXISTS (
               SELECT 1 FROM {s}.runs e
                WHERE e.org = r.org AND e.agent = r.agent AND e.conversation = r.conversation
                  AND e.status IN ('pending', 'running') AND e.seq < r.seq)
     ORDER BY r.seq
     LIMIT 1
       FOR UPDATE SKIP LOCKED
)
UPDATE {s}.runs r
   SET status = 'running', attempts = r.attempts + 1, claimed_by = $1,
       claim_token = r.claim_token + 1,
       error = CASE WHEN r.status = 'running'
                    THEN format('the claim of attempt %s expired (its worker stopped '
                                'heartbeating); re-delivered', r.attempts)
                    ELSE r.error END,
       claim_expires_at = clock_timestamp() + $2 * interval '1 microsecond', updated_at = now()
  FROM next
 WHERE r.id = next.id
RETURNING r.id, r.org, r.agent, r.conversation, r.kind, r.payload, r.attempts,
          r.max_attempts, r.claim_token, r.claim_expires_at
