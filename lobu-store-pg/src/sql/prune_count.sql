-- A dry run of an idle prune: what prune_idle.sql and then prune_forensic.sql would remove
-- with a limit of $5, counted by the same rules (idle_conversations.sql and
-- forensic_copies.sql, lobu-core's rules, see there), nothing locked or removed. The
-- conversations are the oldest $5 that are idle, as the batches take them, with every
-- snapshot they hold; the forensic copies are at most $5 of those left in the other
-- conversations (the real prune removes the idle ones' copies with them first). One
-- statement, so one snapshot of the tables. Under concurrent writes the real prune may take
-- fewer: it skips rows locked at that moment.
WITH idle AS MATERIALIZED (
{idle_conversations}
)
SELECT (SELECT count(*) FROM idle) AS conversations,
       (SELECT count(*)
          FROM {s}.snapshots s
          JOIN idle i ON s.org = i.org AND s.agent = i.agent AND s.conversation = i.conversation)
       AS idle_snapshots,
       (SELECT count(*)
          FROM (SELECT 1
                  FROM (
{forensic_copies}
                       ) f
                 WHERE NOT EXISTS (SELECT 1 FROM idle i
                                    WHERE i.org = f.org AND i.agent = f.agent
                                      AND i.conversation = f.conversation)
                 LIMIT $5) copies)
       AS forensic
