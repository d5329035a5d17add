-- Drop up to $5 rows that are only a spent lease: no head, no snapshot, a lease that lapsed
-- before $1 (the idle cutoff; NULL: none) and is not live now, whatever the cutoff, of a
-- covered agent ($3 the only one, NULL: every agent; never one of $4), so idle keys do not
-- pile up. Not in lobu-core's rules and never counted (a dry run skips it): these rows hold
-- no data, only a conversation's last fence. A conversation with a running run keeps its row,
-- whose fence that run's claim is checked against. Fences come from a sequence, so a later
-- acquisition or claim still gets a larger one. Returns how many rows it took, and 0
-- snapshots.
WITH gone AS (
    DELETE FROM {s}.conversations
     WHERE (org, agent, conversation) IN (
           SELECT c.org, c.agent, c.conversation FROM {s}.conversations c
            WHERE c.head_seq IS NULL AND c.lease_expires_at < $1
              AND c.lease_expires_at <= now()
              AND ($3::text IS NULL OR c.agent = $3) AND c.agent <> ALL ($4::text[])
              AND NOT EXISTS (SELECT 1 FROM {s}.runs r
                               WHERE r.org = c.org AND r.agent = c.agent
                                 AND r.conversation = c.conversation
                                 AND r.status = 'running')
              AND NOT EXISTS (SELECT 1 FROM {s}.snapshots s
                               WHERE s.org = c.org AND s.agent = c.agent
                                 AND s.conversation = c.conversation)
            LIMIT $5
              FOR UPDATE OF c SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) AS taken, 0::bigint AS snapshots FROM gone
