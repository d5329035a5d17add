-- `SessionStore::persist` of an append in one statement (autocommit: one round trip, one
-- commit), tried before the general transaction: the writer's fence $5 is the conversation's
-- newest; its head is the expected version $6, $7 bytes long, with hash state $8 (the state
-- the caller resumed to digest the new bytes); the chain has room for one more delta
-- (delta.rs's store_as_delta: fewer than $12 deltas or deltas under 1/$15 of their base, and
-- deltas not outgrowing it); and the run stored no snapshot before. Then the new bytes $9
-- are stored as a delta (the transcript is $10 bytes with digest $11 and hash state $14, a
-- first title $13) and the head moves. Anything else returns no row and changes nothing:
-- the caller takes the general path, which decides and says why.
WITH conv AS MATERIALIZED (
    SELECT c.base_seq FROM {s}.conversations c
     WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3 AND c.fence = $5
       AND c.head_seq = $6 AND c.head_bytes = $7 AND c.head_state = $8
       AND (c.chain_deltas < $12 OR c.chain_bytes + octet_length($9) < c.base_bytes / $15)
       AND c.chain_bytes + octet_length($9) <= c.base_bytes
       AND NOT EXISTS (
               SELECT 1 FROM {s}.snapshots s
                WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3 AND s.run = $4)
       FOR UPDATE OF c
), ins AS (
    INSERT INTO {s}.snapshots
        (org, agent, conversation, seq, run, status, base_seq, start_offset, bytes, byte_size, digest)
    SELECT $1, $2, $3, nextval('{s}.versions'), $4, 'completed', conv.base_seq, $7, $9, $10, $11
      FROM conv
    RETURNING seq
)
UPDATE {s}.conversations c
   SET head_seq = ins.seq, head_run = $4, head_bytes = $10, head_digest = $11, head_state = $14,
       chain_deltas = c.chain_deltas + 1, chain_bytes = c.chain_bytes + octet_length($9),
       turns = c.turns + 1, title = coalesce(c.title, $13), updated_at = now()
  FROM ins
 WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
RETURNING ins.seq
