-- A completed turn that extends the head, stored as its new bytes only ($5, which start at
-- byte $6 of the $7-byte transcript), chained to the head's whole copy. The caller holds the
-- conversations row lock and has checked the fence in this transaction. The end_lease and
-- finish placeholders are filled in by SessionSql: persist returns the version; complete
-- also ends the ownership and completes the run in the same statement (see COMMIT_TAIL in
-- sessions.rs).
WITH ins AS (
    INSERT INTO {s}.snapshots
        (org, agent, conversation, seq, run, status, base_seq, start_offset, bytes, byte_size, digest)
    SELECT c.org, c.agent, c.conversation, nextval('{s}.versions'), $4, 'completed',
           c.base_seq, $6, $5, $7, $8
      FROM {s}.conversations c
     WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
    RETURNING seq
), head AS (
    UPDATE {s}.conversations c
       SET head_seq = ins.seq, head_run = $4, head_bytes = $7, head_digest = $8, head_state = $10,
           chain_deltas = c.chain_deltas + 1, chain_bytes = c.chain_bytes + octet_length($5),
           turns = c.turns + 1, title = coalesce(c.title, $9), updated_at = now(){end_lease}
      FROM ins
     WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
    RETURNING ins.seq
){finish}
