-- Run $2 of org $1 (the record `status` reads, `{run_record}`), its newest event's seq, and at
-- most $4 of its events after seq $3 as three arrays in seq order. One statement, so one
-- snapshot (READ COMMITTED takes one per statement): a record read as terminal comes with
-- every event the run has (record_events.sql refuses a finished run and holds the run's row
-- until its events commit). No row: the org has no such run.
--
-- A page also stops before the event that would take it past $5 bytes of event data, but
-- always carries the first (one event is at most 1 MiB): no array nears PostgreSQL's 1 GB
-- limit on one value, and a reader's memory stays bounded. The contract allows fewer events
-- than asked for; `last_seq` tells the reader more are stored.
SELECT {run_record},
       (SELECT coalesce(max(e.seq), 0) FROM {s}.run_events e WHERE e.run_id = r.id) AS last_seq,
       coalesce(p.seqs, '{}') AS event_seqs,
       coalesce(p.attempts, '{}') AS event_attempts,
       coalesce(p.data, '{}') AS event_data
  FROM {s}.runs r
 CROSS JOIN LATERAL (
       SELECT array_agg(e.seq ORDER BY e.seq) AS seqs,
              array_agg(e.attempt ORDER BY e.seq) AS attempts,
              array_agg(e.data ORDER BY e.seq) AS data
         FROM (SELECT e.seq, e.attempt, e.data,
                      sum(octet_length(e.data)) OVER (ORDER BY e.seq)
                          - octet_length(e.data) AS before
                 FROM (SELECT e.seq, e.attempt, e.data
                         FROM {s}.run_events e
                        WHERE e.run_id = r.id AND e.seq > $3
                        ORDER BY e.seq
                        LIMIT $4) e) e
        WHERE e.before < $5
       ) p
 WHERE r.org = $1 AND r.id = $2
