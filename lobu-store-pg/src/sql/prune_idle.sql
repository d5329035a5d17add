-- Retention by conversation, never by run history: up to $5 conversations that
-- idle_conversations.sql takes (lobu-core's idle rule, see there) lose their head and every
-- snapshot (each matched on its own org, agent and conversation). Returns how many
-- conversations it took and how many snapshots it removed. The caller repeats it until a
-- batch comes back short or its limit is reached, each batch its own short transaction, so
-- leases and writes of other conversations never wait for a whole prune. SKIP LOCKED leaves
-- a conversation whose row is locked right now (a write or a lease call in flight) to the
-- next prune instead of waiting for it; a write in flight makes it not idle anyway. The row
-- stays for its fence; spent leases are dropped separately (prune_leases.sql).
WITH idle AS (
{idle_conversations}
       FOR UPDATE OF c SKIP LOCKED
), gone AS (
    DELETE FROM {s}.snapshots s
     USING idle i
     WHERE s.org = i.org AND s.agent = i.agent AND s.conversation = i.conversation
    RETURNING 1
), forget AS (
    UPDATE {s}.conversations c
       SET head_seq = NULL, head_run = NULL, head_bytes = 0, head_digest = NULL, head_state = NULL,
           base_seq = NULL, base_bytes = 0, chain_deltas = 0, chain_bytes = 0,
           turns = 0, title = NULL
      FROM idle i
     WHERE c.org = i.org AND c.agent = i.agent AND c.conversation = i.conversation
)
SELECT (SELECT count(*) FROM idle) AS taken,
       (SELECT count(*) FROM gone) AS snapshots
