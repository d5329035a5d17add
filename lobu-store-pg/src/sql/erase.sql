-- Erase a scope (the caller locked it first, sql/erase_lock.sql): its runs of any status
-- (their idempotency keys are columns of the run), their events, its snapshots (completed
-- and forensic) and its conversations' rows (head, counters, lease and fence). Nothing
-- else holds a conversation's ids or bytes: fences and versions are sequences, which stay
-- where they are, so neither is ever reused. $1 org, $2 agent, $3 conversation as in the lock.
-- Events are deleted here rather than left to the cascade from `runs` so that they can be
-- counted; the cascade, run at the end of the statement, then finds nothing left.
-- The scope's lanes go too: every run they counted is deleted here (sql/erase_lock.sql
-- locked them, after any submit that counted a run in one of them).
-- `conversations` counts the distinct conversations anything was deleted of (a run, a
-- snapshot or a row); `heads` names the erased heads, whose hash states the store forgets.
WITH runs AS (
    DELETE FROM {s}.runs
     WHERE org = $1 AND ($2::text IS NULL OR agent = $2)
       AND ($3::text IS NULL OR conversation = $3)
    RETURNING id, agent, conversation
), events AS (
    DELETE FROM {s}.run_events e
     USING runs r
     WHERE e.run_id = r.id
    RETURNING 1
), snapshots AS (
    DELETE FROM {s}.snapshots
     WHERE org = $1 AND ($2::text IS NULL OR agent = $2)
       AND ($3::text IS NULL OR conversation = $3)
    RETURNING agent, conversation
), conversations AS (
    DELETE FROM {s}.conversations
     WHERE org = $1 AND ($2::text IS NULL OR agent = $2)
       AND ($3::text IS NULL OR conversation = $3)
    RETURNING agent, conversation, head_seq
), lanes AS (
    DELETE FROM {s}.lanes
     WHERE org = $1 AND ($2::text IS NULL OR agent = $2)
       AND ($3::text IS NULL OR conversation = $3)
), touched AS (
    SELECT agent, conversation FROM runs
    UNION SELECT agent, conversation FROM snapshots
    UNION SELECT agent, conversation FROM conversations
)
SELECT (SELECT count(*) FROM touched) AS conversations,
       (SELECT count(*) FROM snapshots) AS snapshots,
       (SELECT count(*) FROM runs) AS runs,
       (SELECT count(*) FROM events) AS events,
       ARRAY(SELECT head_seq FROM conversations WHERE head_seq IS NOT NULL) AS heads
