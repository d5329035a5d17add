-- The forensic copies an idle prune takes. The WHERE is lobu-core's
-- `IdlePrune::takes_forensic`: a snapshot that is not completed (a failed, timed-out or
-- cancelled attempt's copy; completed snapshots only ever go with their conversation), of a
-- covered agent ($3 the only one, NULL: every agent; never one of $4), written before $2
-- (NULL: none). Whether the conversation has an owner does not matter: nothing reads these
-- copies back. Not run alone: it is `{forensic_copies}` in prune_forensic.sql and
-- prune_count.sql (parameters as in idle_conversations.sql).
SELECT s.org, s.agent, s.conversation, s.seq
  FROM {s}.snapshots s
 WHERE s.status <> 'completed' AND s.created_at < $2
   AND ($3::text IS NULL OR s.agent = $3) AND s.agent <> ALL ($4::text[])
