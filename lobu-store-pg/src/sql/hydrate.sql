-- The head in one read: its whole copy and the deltas after it, concatenated in version
-- order. Completed rows between the head's base and the head are exactly its chain (a
-- completed write either extends the head or starts a new base). The outer join and
-- `first_seq` let the caller tell a broken chain (Corrupt) from no head at all.
SELECT c.head_seq, c.head_run, c.head_bytes, c.base_seq,
       min(s.seq) AS first_seq,
       string_agg(s.bytes, ''::bytea ORDER BY s.seq) AS transcript
  FROM {s}.conversations c
  LEFT JOIN {s}.snapshots s
         ON s.org = c.org AND s.agent = c.agent AND s.conversation = c.conversation
        AND s.seq BETWEEN c.base_seq AND c.head_seq AND s.status = 'completed'
 WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3 AND c.head_seq IS NOT NULL
 GROUP BY c.head_seq, c.head_run, c.head_bytes, c.base_seq
