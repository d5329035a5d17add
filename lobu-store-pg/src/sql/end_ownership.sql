ended AS (
    -- The ownership ends: the conversation's lease expires now.
    UPDATE {s}.conversations c
       SET lease_expires_at = least(c.lease_expires_at, now())
      FROM owner o
     WHERE c.org = o.org AND c.agent = o.agent AND c.conversation = o.conversation
)
