-- What an import decides on, for a conversation whose row import_take.sql locked in this
-- transaction (a statement of its own, so its snapshot sees what a writer we waited for
-- committed): the head (version, run, SHA-256) and the highest version the store may have
-- issued for the conversation. Versions come from one sequence for all conversations, and a
-- conversation's are drawn while its row is locked, so with the lock held, every version it
-- ever got is at most the sequence's last value (NULL: the sequence never issued any). The
-- row does not remember its own highest version (clear and prune delete the snapshots that
-- held it), so the bound is the sequence's: never below the truth, usually above it. An
-- import that could have kept its version may then get a fresh one (which the contract
-- allows), never one the conversation had.
SELECT head_seq, head_run, head_digest,
       pg_sequence_last_value('{s}.versions') AS last_issued
  FROM {s}.conversations
 WHERE org = $1 AND agent = $2 AND conversation = $3
