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
-- The walk is over lanes (migration 20261204000000), not runs: the lanes with unfinished
-- runs, oldest head first (`ready_seq`, an order only), and each one's oldest unfinished run
-- by the `runs_unfinished` index. A claim thus passes over the conversations that are owned
-- or waiting out a retry, one row each, never over the runs queued behind them. The lane's
-- head is read from the statement's snapshot, which is enough: unfinished runs only become
-- finished, and submits of one conversation commit in `seq` order, so a run submitted after
-- the snapshot is never older than the head the snapshot shows.
--
-- Under READ COMMITTED this is safe against concurrent claimers: the head run's row is
-- locked with SKIP LOCKED (the lane's row is not locked: submits and ends of runs update it),
-- so a run another claimer is taking, or a claim holder is ending, is passed over with its
-- whole lane (never its next run: FIFO); a run whose row changed after our snapshot is
-- re-checked on its newest version (status, due time, attempts), so it is claimed only if
-- still claimable. Only a claimable head is locked (the checks come before the lock).
--
-- The shape is the plan, whatever the statistics were when the statement was prepared (a
-- prepared statement keeps the plan it got while the tables were empty; joining the lanes
-- with `runs` once let such a plan read every unfinished run per claim): the walk steps
-- from lane to lane by the `lanes_ready` index, and each lane costs two index probes of
-- `runs`. `next` takes the first lane that yields a run, in the walk's order, without
-- sorting (that order is fairness only: any lane it takes is claimable).
--
-- Expiries run from clock_timestamp(), not the statement's start, so time spent finding and
-- locking the run never shortens the claim.
WITH RECURSIVE walk AS (
    -- The lanes with unfinished runs, oldest head first, one index probe each, as far as
    -- the claim reads (the recursion runs only as `next` asks for rows).
    (SELECT l.ready_seq, l.org, l.agent, l.conversation
       FROM {s}.lanes l
      WHERE l.unfinished > 0
      ORDER BY l.ready_seq, l.org, l.agent, l.conversation
      LIMIT 1)
    UNION ALL
    SELECT n.ready_seq, n.org, n.agent, n.conversation
      FROM walk w
     CROSS JOIN LATERAL (
           SELECT l.ready_seq, l.org, l.agent, l.conversation
             FROM {s}.lanes l
            WHERE l.unfinished > 0
              AND (l.ready_seq, l.org, l.agent, l.conversation)
                  > (w.ready_seq, w.org, w.agent, w.conversation)
            ORDER BY l.ready_seq, l.org, l.agent, l.conversation
            LIMIT 1) n
), next AS (
    SELECT r.id, r.org, r.agent, r.conversation
      FROM walk l
     CROSS JOIN LATERAL (
               SELECT h.id, h.status, h.run_at, h.claim_expires_at, h.attempts, h.max_attempts
                 FROM {s}.runs h
                WHERE h.org = l.org AND h.agent = l.agent AND h.conversation = l.conversation
                  AND h.status IN ('pending', 'running')
                ORDER BY h.seq
                LIMIT 1) head
     -- A held or waiting head is passed over here, before its row is probed and locked
     -- (the lock re-checks the rest, on the newest version).
     CROSS JOIN LATERAL (
               SELECT r.id, r.org, r.agent, r.conversation
                 FROM {s}.runs r
                WHERE r.id = head.id
                  AND r.status IN ('pending', 'running')
                  AND CASE r.status
                          WHEN 'pending' THEN r.run_at <= now()
                          ELSE r.claim_expires_at <= now() AND r.attempts < r.max_attempts
                      END
                  AND NOT EXISTS (
                          SELECT 1 FROM {s}.conversations c
                           WHERE c.org = r.org AND c.agent = r.agent
                             AND c.conversation = r.conversation
                             AND (c.lease_expires_at > now()
                                  OR (r.status = 'running' AND c.head_run = r.id)))
                  FOR UPDATE OF r SKIP LOCKED) r
     WHERE CASE head.status
               WHEN 'pending' THEN head.run_at <= now()
               ELSE head.claim_expires_at <= now() AND head.attempts < head.max_attempts
           END
     LIMIT 1
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
