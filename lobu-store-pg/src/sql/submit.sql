-- Submit one run, unless the conversation already used its idempotency key ($5; NULL never
-- matches). The caller holds the conversation's submit lock, so `existing` cannot miss a
-- concurrent submit and `seq` order is commit order. The notification is sent at commit.
WITH existing AS (
    SELECT id FROM {s}.runs
     WHERE org = $1 AND agent = $2 AND conversation = $3 AND idempotency_key = $5
), ins AS (
    INSERT INTO {s}.runs
        (id, org, agent, conversation, kind, payload, idempotency_key, max_attempts, retry_delay_us)
    SELECT $4, $1, $2, $3, $6, $7, $5, $8, $9
     WHERE NOT EXISTS (SELECT 1 FROM existing)
    RETURNING id
), notified AS (
    SELECT count(pg_notify($10, '')) FROM ins
)
SELECT id, true AS created FROM ins, notified
UNION ALL
SELECT id, false AS created FROM existing
