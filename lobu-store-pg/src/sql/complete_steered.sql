-- The steered runs $2 (text[]) of org $1 complete with the turn that took them, in that
-- turn's commit transaction, after lobu-core's `multitask::check_steered` passed on the
-- lane read under their row locks (commit_lock.sql with its lane): output $3 (the turn that
-- answered them), no attempt counted, no claim. Each one's followers wake ('events:<run>' on
-- channel $4, which wakes nobody waiting for work: the turn's own completion does that).
-- Returns how many completed; anything but all of them is a bug, and the caller rolls back.
WITH done AS (
    UPDATE {s}.runs r
       SET status = 'completed', output = $3, finished_at = now(), updated_at = now()
     WHERE r.org = $1 AND r.id = ANY($2) AND r.status = 'pending'
    RETURNING r.id, r.org, r.agent, r.conversation, r.seq
), ended_runs AS (
    SELECT org, agent, conversation, seq, id FROM done
), {lane_left}
SELECT count(pg_notify($4, 'events:' || id)) FROM done
