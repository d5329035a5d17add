-- A dry run of an event prune: how many events prune_events.sql would drop with a limit of
-- $2, counted by the same rule (lobu-core's `EventPrune::takes`: events of runs that finished
-- before $1, see prune_events.sql), nothing locked or removed.
SELECT count(*)
  FROM (SELECT 1
          FROM {s}.runs r
          JOIN {s}.run_events e ON e.run_id = r.id
         WHERE r.finished_at < $1
         LIMIT $2) doomed
