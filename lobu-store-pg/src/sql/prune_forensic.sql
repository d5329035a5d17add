-- Drop up to $5 of the forensic copies forensic_copies.sql takes (lobu-core's forensic rule,
-- see there). Returns how many it took and how many snapshots it removed (the same rows).
-- One batch of the caller's loop, its own short transaction; SKIP LOCKED leaves a row being
-- written right now to the next prune.
WITH gone AS (
    DELETE FROM {s}.snapshots
     WHERE (org, agent, conversation, seq) IN (
{forensic_copies}
            LIMIT $5
              FOR UPDATE OF s SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) AS taken, count(*) AS snapshots FROM gone
