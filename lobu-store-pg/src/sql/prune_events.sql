-- Drop at most $5 events of the next $4 runs that finished before $1, oldest run first and
-- each run's oldest events first, after the cursor ($2 finished_at, $3 id; NULL: from the
-- start). The WHERE is lobu-core's `EventPrune::takes`: a finished run (only those have a
-- `finished_at`, the table's CHECK) that last changed before $1 (a finished run's last change
-- is its `finished_at`: see finished_runs.sql). The runs stay.
--
-- A run may lose only its oldest events when $5 runs out inside it (the memory backend does
-- the same). Readers stay correct: events keep their seqs, read_events.sql pages by seq and
-- reports the newest stored seq, and a finished run records nothing more
-- (record_events.sql), so no seq is reused and nothing reappears behind the cursor. Each
-- run's share is counted first and its events taken by the primary key in seq order, so no
-- batch sorts all its events.
--
-- One statement, so its own short transaction. Returns how many events it dropped, how many
-- runs the batch held and its last run, the next cursor (NULL when the batch is empty).
WITH batch AS MATERIALIZED (
    SELECT r.id, r.finished_at,
           (SELECT count(*) FROM {s}.run_events e WHERE e.run_id = r.id) AS events
      FROM {s}.runs r
     WHERE r.finished_at < $1
       AND ($2::timestamptz IS NULL OR (r.finished_at, r.id) > ($2, $3::text))
     ORDER BY r.finished_at, r.id
     LIMIT $4
), portion AS (
    -- Every event of a run while the running total stays within $5, what is left of $5 for
    -- the run that crosses it, none after.
    SELECT b.id,
           least(b.events,
                 greatest($5::bigint - (sum(b.events) OVER (ORDER BY b.finished_at, b.id)
                                        - b.events), 0))::bigint AS n
      FROM batch b
), doomed AS (
    SELECT e.run_id, e.seq
      FROM portion p
     CROSS JOIN LATERAL (SELECT e.run_id, e.seq
                           FROM {s}.run_events e
                          WHERE e.run_id = p.id
                          ORDER BY e.seq
                          LIMIT p.n) e
     WHERE p.n > 0
), gone AS (
    DELETE FROM {s}.run_events e
     USING doomed d
     WHERE e.run_id = d.run_id AND e.seq = d.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS events,
       (SELECT count(*) FROM batch) AS runs,
       tail.finished_at, tail.id
  FROM (SELECT 1) one
  LEFT JOIN (SELECT finished_at, id FROM batch ORDER BY finished_at DESC, id DESC LIMIT 1) tail
    ON true
