-- The conversations an idle prune takes, at most $5 of them, oldest head first. The WHERE is
-- lobu-core's `IdlePrune::takes_conversation` plus the trait's "no live owner":
-- * a covered agent (`Agents`: $3 the only one, NULL: every agent; never one of $4);
-- * a head written before $1 (NULL: no conversation): `updated_at` is when the head last
--   changed, and a row with no head is not a conversation to prune;
-- * no live owner: no lease or claim that has not expired (a claim takes the conversation's
--   lease) and no running run (even one whose claim lapsed, until it is re-delivered or
--   reaped): its owner may still write.
-- Oldest first (the idle index's order), so the batches of prune_idle.sql take, between
-- them, the very conversations a dry run (prune_count.sql) counts. Not run alone: it is
-- `{idle_conversations}` in those two, with the parameters every prune statement takes
-- (prune.rs: $1 idle_before, $2 forensic_before, $3 the only agent, $4 agents left out, $5
-- rows).
SELECT c.org, c.agent, c.conversation
  FROM {s}.conversations c
 WHERE c.head_seq IS NOT NULL AND c.updated_at < $1
   AND ($3::text IS NULL OR c.agent = $3) AND c.agent <> ALL ($4::text[])
   AND c.lease_expires_at <= now()
   AND NOT EXISTS (SELECT 1 FROM {s}.runs r
                    WHERE r.org = c.org AND r.agent = c.agent
                      AND r.conversation = c.conversation AND r.status = 'running')
 ORDER BY c.updated_at, c.org, c.agent, c.conversation
 LIMIT $5
