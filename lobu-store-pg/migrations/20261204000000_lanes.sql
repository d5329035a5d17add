-- lobu-store-pg, schema version 8: lanes, so a claim costs what the conversations it passes
-- over cost, not what the queue holds. Same schema selection as version 1.
--
-- A claim used to walk every unfinished run oldest first and ask, per run, whether an
-- earlier run of its conversation was unfinished: with thousands of runs queued behind busy
-- conversations, every claim read all of them. Now it walks one row per conversation with
-- unfinished runs (a lane), oldest head first, and reads each lane's oldest unfinished run by
-- the `runs_unfinished` index (src/sql/claim.sql).
--
-- `unfinished` counts the conversation's runs in `pending` or `running`. Every statement
-- that adds one (submit) or ends some (complete, fail, release, cancel, the reaper, steered
-- runs) changes it by arithmetic on the row's newest version (`unfinished + 1`,
-- `unfinished - n`), in the statement that changes the runs, so it is exact whatever order
-- concurrent transactions commit in, and every snapshot sees runs and lanes agree. The lane
-- row is the last lock each of those statements takes; a claim never locks it.
-- `ready_seq` only orders lanes: never above the `seq` of the lane's oldest unfinished run
-- (see the statements that end runs), and nothing depends on it for correctness. A lane at
-- 0 stays (a later submit reuses it); erasure deletes its scope's lanes.
SELECT set_config(
    'search_path',
    quote_ident(coalesce(nullif(current_setting('lobu.schema', true), ''), 'lobu')),
    true
);

CREATE TABLE lanes (
    org          text COLLATE "C" NOT NULL,
    agent        text COLLATE "C" NOT NULL,
    conversation text COLLATE "C" NOT NULL,
    unfinished   integer NOT NULL CHECK (unfinished >= 0),
    ready_seq    bigint NOT NULL,
    PRIMARY KEY (org, agent, conversation)
);

-- The claim's walk: lanes with work, oldest head first, stepped through by the whole key
-- (ready_seq can tie).
CREATE INDEX lanes_ready ON lanes (ready_seq, org, agent, conversation) WHERE unfinished > 0;

-- The runs a previous version left unfinished, whatever their state (waiting, waiting out a
-- retry delay, claimed, or claimed with a lapsed claim), counted per conversation. A store
-- migrates before it serves, and the file runs in one transaction.
INSERT INTO lanes (org, agent, conversation, unfinished, ready_seq)
SELECT org, agent, conversation, count(*), min(seq)
  FROM runs
 WHERE status IN ('pending', 'running')
 GROUP BY org, agent, conversation;

-- The previous claim's scan. Nothing reads it now (the queue's depth is counted from the
-- lanes), and every submit and every end of a run paid for keeping it.
DROP INDEX runs_claimable;
