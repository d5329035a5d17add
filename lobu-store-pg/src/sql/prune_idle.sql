-- Retention by conversation, never by run history: up to $2 conversations whose head was last
-- written before $1 lose their head and every snapshot (each matched on its own org, agent and
-- conversation). The caller repeats this until it finds none, each batch its own short
-- transaction, so leases and writes of other conversations never wait for a whole prune.
-- SKIP LOCKED leaves a conversation whose row is locked right now (a write or a lease call in
-- flight) to the next prune instead of waiting for it; a write in flight makes it not idle
-- anyway. A conversation with a live owner (a lease or claim not yet expired) or a running
-- run (even one whose claim lapsed, until it is re-delivered or reaped) is never pruned: its
-- owner may still write. The row stays for its fence; spent leases are dropped separately.
WITH idle AS (
    SELECT c.org, c.agent, c.conversation
      FROM {s}.conversations c
     WHERE head_seq IS NOT NULL AND updated_at < $1 AND lease_expires_at <= now()
       AND NOT EXISTS (SELECT 1 FROM {s}.runs r
                        WHERE r.org = c.org AND r.agent = c.agent
                          AND r.conversation = c.conversation AND r.status = 'running')
     LIMIT $2
       FOR UPDATE SKIP LOCKED
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
SELECT (SELECT count(*) FROM idle) AS conversations,
       (SELECT count(*) FROM gone) AS snapshots
