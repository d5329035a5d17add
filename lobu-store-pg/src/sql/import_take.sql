-- The first statement of an import: take the conversation's row lock, the one persist,
-- clear, claim and commit take (the last lock each of them takes, so an import, which takes
-- no other, never waits in a cycle with them). A conversation with no row gets one: no lease
-- (lapsed now, as a released one) and fence -1, which no lease or claim ever carries (fences
-- come from the `fences` sequence, which starts at 1, and a caller's fence is never
-- negative), so the store still says no fence was ever issued for it; the next acquisition or
-- claim draws a real one. An existing row is only locked: DO UPDATE ... WHERE false locks
-- the conflicting row (its newest version, waiting for a writer in flight) and writes
-- nothing. Returns a row only when it created one.
INSERT INTO {s}.conversations AS c (org, agent, conversation, fence, lease_expires_at)
VALUES ($1, $2, $3, -1, now())
ON CONFLICT (org, agent, conversation) DO UPDATE SET fence = c.fence WHERE false
RETURNING true
