lane AS MATERIALIZED (
    -- The conversation's unfinished runs (org $1, agent {agent}, conversation {conversation}),
    -- oldest first, as lobu-core's `multitask::Queued` has them, for its rules to decide on.
    -- A statement that checks a claim reads them after the check's rows, so nothing once the
    -- check fails. FIFO per conversation makes the claimed run, if any, the first.
    SELECT r.seq, r.id, r.kind, r.status, r.attempts, r.steer,
           r.cancel_requested IS NOT NULL AS cancelling
      FROM {s}.runs r{after}
     WHERE r.org = $1 AND r.agent = {agent} AND r.conversation = {conversation}
       AND r.status IN ('pending', 'running')
     ORDER BY r.seq
     LIMIT {limit}{lock}
)
