-- Submit one run, unless the conversation already used its idempotency key ($5; NULL never
-- matches), in one statement (autocommit: one round trip, one commit). The conversation's
-- submit lock is taken before the run's `seq` is drawn and held until commit, so `seq`
-- order is commit order within a conversation (the claim's FIFO reasoning relies on it).
-- `existing` reads the statement's snapshot, taken before the lock: a submit with the same
-- key that committed meanwhile is caught by the unique index instead, and then no row comes
-- back; the caller repeats the statement in a transaction that takes the lock first, whose
-- snapshot sees that run. The notification (the new run's id: this process drops its echo,
-- see wakeup.rs) is sent at commit.
-- A steer run ($11) also wakes the followers of the conversation's claimed run, if it has
-- one ('events:<run>', which wakes nobody waiting for work: see wakeup.rs), and names it
-- (`running`) for the caller's local wake-up. A hint: a run claimed after the statement's
-- snapshot is not woken; its turn asks `steerable` anyway.
WITH locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(1818391153,
               hashtext(concat_ws(chr(31), '{s}', $1::text, $2::text, $3::text))) AS done
), existing AS (
    SELECT id FROM {s}.runs
     WHERE org = $1 AND agent = $2 AND conversation = $3 AND idempotency_key = $5
), ins AS (
    INSERT INTO {s}.runs
        (id, org, agent, conversation, kind, payload, idempotency_key, max_attempts, retry_delay_us,
         steer)
    SELECT $4, $1, $2, $3, $6, $7, $5, $8, $9, $11
      FROM locked
     WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (org, agent, conversation, idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING id, seq
), lane AS (
    -- The conversation's lane counts the new run (migration 20261204000000). A lane that
    -- had no unfinished run now starts at this run; any other keeps its head.
    INSERT INTO {s}.lanes AS l (org, agent, conversation, unfinished, ready_seq)
    SELECT $1, $2, $3, 1, ins.seq FROM ins
    ON CONFLICT (org, agent, conversation) DO UPDATE
       SET unfinished = l.unfinished + 1,
           ready_seq = CASE WHEN l.unfinished = 0 THEN excluded.ready_seq ELSE l.ready_seq END
), notified AS (
    SELECT count(pg_notify($10, id)) FROM ins
), running AS MATERIALIZED (
    SELECT r.id FROM {s}.runs r
     WHERE $11 AND EXISTS (SELECT 1 FROM ins)
       AND r.org = $1 AND r.agent = $2 AND r.conversation = $3 AND r.status = 'running'
), woken AS (
    SELECT count(pg_notify($10, 'events:' || id)) FROM running
)
SELECT id, true AS created, (SELECT min(id) FROM running) AS running FROM ins, notified, woken
UNION ALL
SELECT id, false AS created, NULL AS running FROM existing
