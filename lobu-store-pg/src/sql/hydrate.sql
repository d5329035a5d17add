-- The head in one read: its whole copy and the deltas after it, one row each in version
-- order, concatenated by the caller (a server-side string_agg copies the whole transcript
-- once more, and grows its buffer by doubling). Completed rows between the head's base and
-- the head are exactly its chain (a completed write either extends the head or starts a new
-- base). The outer join lets the caller tell a broken chain (Corrupt: no row at the base, a
-- row without bytes, a wrong length) from no head at all (no row). `updated_at` is when the
-- head was written (export reports it; hydrate ignores it).
SELECT c.head_seq, c.head_run, c.head_bytes, c.base_seq, c.updated_at, s.seq, s.bytes
  FROM {s}.conversations c
  LEFT JOIN {s}.snapshots s
         ON s.org = c.org AND s.agent = c.agent AND s.conversation = c.conversation
        AND s.seq BETWEEN c.base_seq AND c.head_seq AND s.status = 'completed'
 WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3 AND c.head_seq IS NOT NULL
 ORDER BY s.seq
