-- A completed turn stored as a whole copy ($6 bytes with digest $7 and hash state $10) that
-- starts a new chain: the bytes placeholder is the whole transcript $5, or, for a re-base of
-- an append, the head's chain read in the server followed by the appended bytes $5
-- (REBASE_BYTES in sessions.rs), so the history is neither sent nor hashed by the client. The older
-- completed rows can never be read again: their bytes are dropped, their rows stay as the
-- runs' records. The caller holds the conversations row lock and has checked the fence.
-- The end_lease and finish placeholders are filled in by SessionSql, as in write_delta.sql.
WITH ins AS (
    INSERT INTO {s}.snapshots
        (org, agent, conversation, seq, run, status, base_seq, start_offset, bytes, byte_size, digest)
    SELECT $1, $2, $3, v.seq, $4, 'completed', v.seq, 0, {bytes}, $6, $7
      FROM (SELECT nextval('{s}.versions') AS seq) v
    RETURNING seq
), superseded AS (
    UPDATE {s}.snapshots s
       SET bytes = NULL
     WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3
       AND s.status = 'completed' AND s.bytes IS NOT NULL
       AND s.seq < (SELECT seq FROM ins)
), head AS (
    UPDATE {s}.conversations c
       SET head_seq = ins.seq, head_run = $4, head_bytes = $6, head_digest = $7, head_state = $10,
           base_seq = ins.seq, base_bytes = $6, chain_deltas = 0, chain_bytes = 0,
           turns = c.turns + 1,
           title = CASE WHEN $8 THEN $9 ELSE coalesce(c.title, $9) END,
           updated_at = now(){end_lease}
      FROM ins
     WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
    RETURNING ins.seq
){finish}
