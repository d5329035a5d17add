-- Claim the oldest runnable run and take its conversation, in one statement (one round trip).
-- A run is runnable when it is the oldest unfinished run of its conversation (FIFO, and a
-- conversation with a claimed or retry-waiting run has nothing else claimable), pending and
-- due, or claimed with a lapsed lease and attempts left (re-delivery), and its conversation
-- has no live owner (no live lease and no live claim: a claim sets the lease). A lapsed
-- claim whose transcript already became the head is never re-delivered: the reaper completes
-- it (see reap.sql).
--
-- Taking the conversation is try_acquire's upsert: the fence is drawn from `fences` under the
-- conversation's row lock, the lease expiry is the claim's expiry. The run stores the fence
-- in `claim_token`. If a lease was taken between our snapshot and the row lock, the upsert's
-- WHERE (checked on the newest row version) returns nothing, the run is not updated, and the
-- claim finds nothing this time.
--
-- Under READ COMMITTED this is safe against concurrent claimers: SKIP LOCKED passes over a
-- run another claimer is taking; a run whose row changed after our snapshot is re-checked on
-- its newest version (status, due time, lease), so it is claimed only if still claimable. The
-- NOT EXISTS reads our snapshot, which is enough: unfinished runs only become finished, and
-- submits of one conversation commit in `seq` order, so "no earlier unfinished run" stays true.
-- Locks are taken run first, then conversation, as complete, fail, release and heartbeat do.
-- Expiries run from clock_timestamp(), not the statement's start, so time spent finding and
-- locking the run never shortens the claim.
WITH next AS (
    SELECT r.id, r.org, r.agent, r.conversation
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
       AND NOT EXISTS (
               SELECT 1 FROM {s}.conversations c
                WHERE c.org = r.org AND c.agent = r.agent AND c.conversation = r.conversation
                  AND (c.lease_expires_at > now()
                       OR (r.status = 'running' AND c.head_run = r.id)))
     ORDER BY r.seq
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), owner AS (
    INSERT INTO {s}.conversations AS c (org, agent, conversation, fence, lease_expires_at)
    SELECT next.org, next.agent, next.conversation, nextval('{s}.fences'),
           clock_timestamp() + $2 * interval '1 microsecond'
      FROM next
    ON CONFLICT (org, agent, conversation) DO UPDATE
       SET fence = nextval('{s}.fences'),
           lease_expires_at = clock_timestamp() + $2 * interval '1 microsecond'
     WHERE c.lease_expires_at <= clock_timestamp()
    RETURNING c.fence, c.lease_expires_at, c.head_seq, c.head_state
)
UPDATE {s}.runs r
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
