-- What the running turn of the newest claim (held_claim.sql, no cancellation requested) may
-- take, in one statement: the conversation's unfinished runs, at most $7 (the claimed run and
-- enough behind it for lobu-core's `multitask::steerable`), and the payloads of the steer runs
-- among them, in lane order (NULL for the others). It only reads: looking takes nothing. No
-- row: the claim is not held (the caller asks why: `Fenced`, `Cancelled`, `NotFound`).
WITH {held_claim}, {lane}
SELECT {lane_columns},
       (SELECT jsonb_agg(CASE WHEN l.steer THEN r.payload END ORDER BY l.seq)
          FROM lane l JOIN {s}.runs r ON r.id = l.id) AS payloads
  FROM held
