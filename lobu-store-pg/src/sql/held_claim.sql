held AS MATERIALIZED (
    -- The run of the newest claim ($1 org, $2 run, $3 worker, $4 fence), locked first...
    SELECT r.id FROM {s}.runs r
     WHERE r.org = $1 AND r.id = $2 AND r.status = 'running'
       AND r.claimed_by = $3 AND r.claim_token = $4{not_cancelled}
       FOR UPDATE
), owner AS MATERIALIZED (
    -- ...then its conversation ($5 agent, $6 id), still owned under the same fence.
    SELECT c.org, c.agent, c.conversation FROM {s}.conversations c, held
     WHERE c.org = $1 AND c.agent = $5 AND c.conversation = $6 AND c.fence = $4
       FOR UPDATE OF c
)
