-- The common end of a turn in one statement (autocommit: one round trip, one commit), tried
-- before the general path: the newest claim (held_claim.sql; no cancellation requested)
-- holds the conversation; its head
-- is the expected version $7, $8 bytes long, with hash state $9 (the state the caller resumed
-- to digest the new bytes); the chain has room for one more delta (delta.rs's
-- store_as_delta: fewer than $13 deltas or deltas under 1/$18 of their base, and deltas not
-- outgrowing it); and the run stored no snapshot before. Then the new
-- bytes $10 are stored as a delta (the transcript is $11 bytes with digest $12 and hash
-- state $17, a first title $14), the head moves, the run completes with output $15, the
-- ownership ends and the run's followers are notified on channel $16, in one statement.
-- Anything else returns no row and changes nothing: the caller takes the general path
-- (sql/commit_lock.sql and the persist plan), which decides and says why.
WITH {held_claim}, conv AS MATERIALIZED (
    SELECT c.base_seq FROM {s}.conversations c, owner o
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
       AND c.head_seq = $7 AND c.head_bytes = $8 AND c.head_state = $9
       AND (c.chain_deltas < $13 OR c.chain_bytes + octet_length($10) < c.base_bytes / $18)
       AND c.chain_bytes + octet_length($10) <= c.base_bytes
       AND NOT EXISTS (
               SELECT 1 FROM {s}.snapshots s
                WHERE s.org = $1 AND s.agent = $5 AND s.conversation = $6 AND s.run = $2)
       FOR UPDATE OF c
), ins AS (
    INSERT INTO {s}.snapshots
        (org, agent, conversation, seq, run, status, base_seq, start_offset, bytes, byte_size, digest)
    SELECT $1, $5, $6, nextval('{s}.versions'), $2, 'completed', conv.base_seq, $8, $10, $11, $12
      FROM conv
    RETURNING seq
), head AS (
    UPDATE {s}.conversations c
       SET head_seq = ins.seq, head_run = $2, head_bytes = $11, head_digest = $12, head_state = $17,
           chain_deltas = c.chain_deltas + 1, chain_bytes = c.chain_bytes + octet_length($10),
           turns = c.turns + 1, title = coalesce(c.title, $14), updated_at = now(),
           lease_expires_at = least(c.lease_expires_at, now())
      FROM ins
     WHERE c.org = $1 AND c.agent = $5 AND c.conversation = $6
    RETURNING ins.seq
), done AS (
    UPDATE {s}.runs r
       SET status = 'completed', output = $15, committed_seq = head.seq,
           claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM head
     WHERE r.org = $1 AND r.id = $2
    RETURNING r.id, head.seq, r.org, r.agent, r.conversation, r.seq AS run_seq
), ended_runs AS (
    SELECT org, agent, conversation, run_seq AS seq, id FROM done
), {lane_left}
SELECT seq, count(pg_notify($16, id)) AS notified FROM done GROUP BY seq
