-- The read of a submit whose strategy looks at the conversation's unfinished runs (reject,
-- interrupt, rollback), in the transaction that took the conversation's submit lock in the
-- statement before: this statement's snapshot is taken after the lock, so it sees every run
-- submitted before and the key's earlier run if there is one ($4; `existing`, and then the
-- caller does nothing else). The lane's rows stay locked until commit, so no claim, commit or
-- cancel changes them between the plan and what the caller does with it; a run that changed
-- since the snapshot is read (or dropped, once finished) in its newest version. Runs are
-- locked oldest first, as a commit that took steered runs locks them (commit_lock.sql).
WITH existing AS (
    SELECT id FROM {s}.runs
     WHERE org = $1 AND agent = $2 AND conversation = $3 AND idempotency_key = $4
), {lane}
SELECT (SELECT id FROM existing) AS existing, {lane_columns}
