-- `SessionStore::scan`: every conversation that has a head, across all orgs, in key order,
-- after the position $1, $2, $3 (org, agent, conversation; three empty strings for the first
-- page: ids are never empty, so every key is after them), at most $4 rows. The key columns
-- are COLLATE "C", so this order is Rust's `str` order, and the row-value comparison is a
-- range scan of the primary key (always the same form, so a generic plan uses it too).
SELECT org, agent, conversation
  FROM {s}.conversations
 WHERE (org, agent, conversation) > ($1::text, $2::text, $3::text)
   AND head_seq IS NOT NULL
 ORDER BY org, agent, conversation
 LIMIT $4
