-- The runs a run prune takes. The WHERE is lobu-core's `RunPrune::takes`: completed runs
-- that finished before $1, failed, timed-out and cancelled ones (the dead letters) that
-- finished before $2, and never a pending or running one (the table's CHECK: only they have
-- no `finished_at`). The rule reads the run's last change (`updated_at`); for a finished run
-- that is `finished_at`: every statement that ends a run sets both to now(), and nothing
-- changes a finished run afterwards. The first condition follows from the others; it lets
-- the scan walk the index of finished runs. Not run alone: it is `{finished_runs}` in
-- prune_runs.sql and prune_runs_count.sql ($3: how many at most).
SELECT r.id
  FROM {s}.runs r
 WHERE r.finished_at < greatest($1::timestamptz, $2::timestamptz)
   AND ((r.status = 'completed' AND r.finished_at < $1)
        OR (r.status IN ('failed', 'timeout', 'cancelled') AND r.finished_at < $2))
