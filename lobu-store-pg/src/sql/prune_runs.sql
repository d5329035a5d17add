-- Drop up to $3 of the runs finished_runs.sql takes (lobu-core's run rule, see there),
-- oldest first. Their events go with them (run_events' foreign key cascades, a lookup by its
-- primary key per run) and so do their idempotency keys (a column of the run: client retries
-- come within minutes, and keeping every key forever would grow without bound). Snapshots
-- have no key to runs: transcripts never depend on run retention. One batch of the caller's
-- loop, its own short transaction; SKIP LOCKED leaves a run locked right now (a cancel that
-- found it finished) to the next prune. The batch's ids are collected first and each run
-- found again by its primary key: with `IN` or a join, a generic plan (which cannot see how
-- small $3 is) scans the whole table per batch.
DELETE FROM {s}.runs
 WHERE id = ANY (ARRAY(
{finished_runs}
        ORDER BY r.finished_at
        LIMIT $3
          FOR UPDATE OF r SKIP LOCKED))
