-- A dry run of a run prune: how many runs prune_runs.sql would drop with a limit of $3,
-- counted by the same rule (finished_runs.sql, lobu-core's, see there), nothing locked or
-- removed.
SELECT count(*)
  FROM (
{finished_runs}
        LIMIT $3) doomed
