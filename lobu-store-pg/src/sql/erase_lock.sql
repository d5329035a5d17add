-- The first statement of an erasure: take what the scope's writers take, in their order, so
-- an erasure never interleaves with a submit, a claim, a commit or a persist. $1 is the org,
-- $2 the agent and $3 the conversation; NULL widens the scope (an agent's conversations, a
-- whole org), so one statement serves the three scopes.
--   1. One conversation: its submit lock (sql/submit.sql, queue.rs `submit_lock`), under
--      which submits and double texting queue. A wider scope takes none: one advisory lock
--      per conversation could exhaust the lock table for a large org, and a submit that
--      commits after the erasure's delete is simply a later use of the conversation.
--   2. The scope's runs, oldest first (claim and commit lock a run before its conversation).
--   3. The conversations' rows (persist, clear, leases and claims lock them).
--   4. The scope's lanes (every submit and every end of a run updates its lane, last). A
--      submit that counted a run in one of them has committed before this returns, so the
--      delete sees its run; one that comes later waits, and counts its run in a new lane.
-- Each step is a one-time filter (an uncorrelated sub-select in WHERE) on the next, so it is
-- done before the next step scans anything. The erasure's delete (sql/erase.sql) then runs
-- in a statement of its own, whose snapshot sees whatever a writer we waited for committed.
WITH gate AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock(1818391153,
               hashtext(concat_ws(chr(31), '{s}', $1::text, $2::text, $3::text)))) AS taken
      FROM (SELECT WHERE $3::text IS NOT NULL) one_conversation
), runs AS MATERIALIZED (
    SELECT r.id
      FROM {s}.runs r
     WHERE (SELECT taken FROM gate) >= 0
       AND r.org = $1 AND ($2::text IS NULL OR r.agent = $2)
       AND ($3::text IS NULL OR r.conversation = $3)
     ORDER BY r.seq
       FOR UPDATE
), conversations AS MATERIALIZED (
    SELECT c.conversation
      FROM {s}.conversations c
     WHERE (SELECT count(*) FROM runs) >= 0
       AND c.org = $1 AND ($2::text IS NULL OR c.agent = $2)
       AND ($3::text IS NULL OR c.conversation = $3)
     ORDER BY c.agent, c.conversation
       FOR UPDATE
), lanes AS MATERIALIZED (
    SELECT l.conversation
      FROM {s}.lanes l
     WHERE (SELECT count(*) FROM conversations) >= 0
       AND l.org = $1 AND ($2::text IS NULL OR l.agent = $2)
       AND ($3::text IS NULL OR l.conversation = $3)
     ORDER BY l.agent, l.conversation
       FOR UPDATE
)
SELECT (SELECT count(*) FROM lanes) + count(*) FROM conversations
