-- Drop the events of the next $4 runs that finished before $1, oldest first, after the
-- cursor ($2 finished_at, $3 id; NULL: from the start). One statement, so its own short
-- transaction. Returns how many events it dropped and the batch's last run, the next cursor;
-- no row: no finished run is left after the cursor. A finished run records nothing more
-- (record_events.sql), so nothing reappears behind the cursor.
WITH batch AS MATERIALIZED (
    SELECT r.id, r.finished_at
      FROM {s}.runs r
     WHERE r.finished_at < $1
       AND ($2::timestamptz IS NULL OR (r.finished_at, r.id) > ($2, $3::text))
     ORDER BY r.finished_at, r.id
     LIMIT $4
), gone AS (
    DELETE FROM {s}.run_events e
     USING batch
     WHERE e.run_id = batch.id
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS events, b.finished_at, b.id
  FROM (SELECT finished_at, id FROM batch ORDER BY finished_at DESC, id DESC LIMIT 1) b
