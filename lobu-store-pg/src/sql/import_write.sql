-- The head an import writes, after lobu-core's `plan_import` decided on what
-- import_head.sql read, in the transaction that holds the conversation's row lock: run $4's
-- transcript $6 ($7 bytes, SHA-256 $8, hash state $9, title $10) as a completed whole copy
-- that starts a chain, written at $11 (the exported time, which list and export then
-- report), at version $5, or at the sequence's next version when $5 is NULL. The
-- conversation has no head, so no completed snapshot (clear and prune remove them with the
-- head): nothing to supersede. Fence and lease are left as they are.
-- At version $5, the sequence is first moved up to $5 if it is below, so every later version
-- (of this conversation and every other) is above it. setval is not transactional (a
-- rollback leaves the sequence moved: a gap, as a rolled-back nextval leaves) and not a
-- compare-and-set, so imports at a version take a transaction-level advisory lock (keyed by
-- the schema) before they read and move the sequence: two imports never interleave their
-- read and their setval, so one never moves it back below the other's version (a migration
-- imports many conversations at once). The lock is taken in the subquery the select list
-- reads, so the read happens after it. What remains is a persist's nextval between the read
-- and the setval going past $5: more than ($5 - the value read) versions issued within
-- microseconds; a sequence cannot be locked against nextval.
WITH bump AS (
    SELECT CASE WHEN $5::bigint > coalesce(pg_sequence_last_value('{s}.versions'), 0)
                THEN setval('{s}.versions', $5) END
      FROM (SELECT pg_advisory_xact_lock(hashtext('{s}.versions'))
             WHERE $5::bigint IS NOT NULL) AS serialised
), v AS (
    SELECT coalesce($5::bigint, nextval('{s}.versions')) AS seq
     WHERE (SELECT count(*) FROM bump) >= 0
), ins AS (
    INSERT INTO {s}.snapshots
        (org, agent, conversation, seq, run, status, base_seq, start_offset, bytes, byte_size,
         digest, created_at)
    SELECT $1, $2, $3, v.seq, $4, 'completed', v.seq, 0, $6, $7, $8, $11
      FROM v
    RETURNING seq
)
UPDATE {s}.conversations c
   SET head_seq = ins.seq, head_run = $4, head_bytes = $7, head_digest = $8, head_state = $9,
       base_seq = ins.seq, base_bytes = $7, chain_deltas = 0, chain_bytes = 0,
       turns = c.turns + 1, title = $10, updated_at = $11
  FROM ins
 WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
RETURNING ins.seq
