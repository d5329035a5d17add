lane_left AS (
    -- The runs `ended_runs` ended (org, agent, conversation, seq, id) leave their lanes
    -- (migration 20261204000000): arithmetic on each lane's newest row version, the last lock
    -- the statement takes. `ready_seq` moves up to the lane's next unfinished run this
    -- statement sees past the ended ones, or past the newest ended one if it sees none (the
    -- runs it cannot see were submitted after its snapshot, so are newer than every run it
    -- ended), and never down: it stays at or below the lane's head, and only orders lanes.
    UPDATE {s}.lanes l
       SET unfinished = l.unfinished - e.n,
           ready_seq = greatest(l.ready_seq, coalesce(
               (SELECT u.seq FROM {s}.runs u
                 WHERE u.org = e.org AND u.agent = e.agent AND u.conversation = e.conversation
                   AND u.status IN ('pending', 'running') AND u.seq >= l.ready_seq
                   AND u.id <> ALL (e.ids)
                 ORDER BY u.seq
                 LIMIT 1),
               e.last + 1))
      FROM (SELECT org, agent, conversation, count(*)::integer AS n, max(seq) AS last,
                   array_agg(id) AS ids
              FROM ended_runs
             GROUP BY org, agent, conversation) e
     WHERE l.org = e.org AND l.agent = e.agent AND l.conversation = e.conversation
)
