-- Forget one conversation: every snapshot (all statuses) and the head. The row stays for its
-- fence and lease; fences and versions come from sequences, so neither is ever reused. The
-- caller locked the row and checked the fence in this transaction.
WITH gone AS (
    DELETE FROM {s}.snapshots
     WHERE org = $1 AND agent = $2 AND conversation = $3
    RETURNING 1
), forget AS (
    UPDATE {s}.conversations
       SET head_seq = NULL, head_run = NULL, head_bytes = 0, head_digest = NULL, head_state = NULL,
           base_seq = NULL, base_bytes = 0, chain_deltas = 0, chain_bytes = 0,
           turns = 0, title = NULL, updated_at = now()
     WHERE org = $1 AND agent = $2 AND conversation = $3 AND head_seq IS NOT NULL
)
SELECT count(*) FROM gone
