-- The first statement of a `complete` with a transcript (or with steered runs): lock the run ($4) and then its
-- conversation ($1-$3), in that order (as claim does), and read everything the commit
-- decides on: the run's claim (status, holder, fence, committed version, a requested
-- cancellation, which refuses the commit), the conversation's
-- fence and head (persist's `Head`), and the run's earlier snapshots, newest first (persist's
-- same-run check). Locked rows are read in their newest version; the snapshot list comes
-- from the statement's snapshot, which is enough because only this claim may write the
-- conversation while its fence is the newest (checked on the locked row).
-- No row: the run does not exist in this org.
-- A commit that took steered runs also reads the conversation's lane (sql/lane.sql: after
-- the conversation's row, its runs locked oldest first, at most $5) for lobu-core's
-- `multitask::check_steered`; every other commit gets this statement without it.
WITH run AS MATERIALIZED (
    SELECT status, claimed_by, claim_token, committed_seq, cancel_requested
      FROM {s}.runs WHERE org = $1 AND id = $4
       FOR UPDATE
), conv AS MATERIALIZED (
    SELECT c.fence, c.head_seq, c.head_bytes, c.head_digest, c.head_state, c.base_bytes, c.chain_deltas,
           c.chain_bytes, c.title IS NOT NULL AS has_title
      FROM {s}.conversations c, run
     WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
       FOR UPDATE OF c
){lane}
SELECT run.status, run.claimed_by, run.claim_token, run.committed_seq, run.cancel_requested,
       conv.fence AS newest, conv.head_seq, coalesce(conv.head_bytes, 0) AS head_bytes, conv.head_digest,
       conv.head_state,
       coalesce(conv.base_bytes, 0) AS base_bytes, coalesce(conv.chain_deltas, 0) AS chain_deltas,
       coalesce(conv.chain_bytes, 0) AS chain_bytes, coalesce(conv.has_title, false) AS has_title,
       ARRAY(SELECT s.seq FROM {s}.snapshots s
              WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3 AND s.run = $4
              ORDER BY s.seq DESC) AS earlier_seq,
       ARRAY(SELECT s.status FROM {s}.snapshots s
              WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3 AND s.run = $4
              ORDER BY s.seq DESC) AS earlier_status,
       ARRAY(SELECT s.byte_size FROM {s}.snapshots s
              WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3 AND s.run = $4
              ORDER BY s.seq DESC) AS earlier_size,
       ARRAY(SELECT s.digest FROM {s}.snapshots s
              WHERE s.org = $1 AND s.agent = $2 AND s.conversation = $3 AND s.run = $4
              ORDER BY s.seq DESC) AS earlier_digest{lane_columns}
  FROM run LEFT JOIN conv ON true
