-- Append events $4 (text[], each one JSON object, checked by the caller) to run $2 of org $1
-- under the claim with fence $3 as attempt $5, in one autocommitted statement; wake the
-- run's followers on channel $6 with the payload 'events:<run>'. Returns the run's newest
-- seq afterwards. No row: the claim may not record (the caller asks why, NotFound or Fenced).
--
-- Who may record is lobu_core::events::check_may_record stated in SQL: the run is unfinished
-- (`pending` after its own fail or release, or `running`) and its newest claim is this one.
-- `claim_token` holds the fence of the run's newest claim (every claim draws a fresh fence
-- from `fences` and stores it there; fail and release keep it; see migration
-- 20260601000000), so `claim_token = $3` is "last_fence == claim.fence".
--
-- FOR SHARE holds off every change of the run (complete, fail, release, a re-claim and the
-- reaper all update the row) until this statement commits, so the run cannot end or change
-- hands between the check and the insert: once a run is terminal, all its events are
-- stored. Seqs are the run's newest seq plus the position in $4, read under that lock; two
-- appends racing under one claim (the runtime never does that) compute the same seqs and the
-- second fails on the primary key (Conflict) and stores nothing.
--
-- Asynchronous commit: events are not the transcript, and a synchronous WAL flush per append
-- would add a disk sync to every batch of streamed output. `synchronous_commit` is read when
-- the transaction commits, so setting it for this transaction only (`is_local`) inside the
-- statement makes this statement's commit asynchronous and nothing else. A finished run never
-- loses its events to a server crash: the turn's `complete` (or the attempt's `fail`) that
-- follows is a synchronous commit, and flushing its commit record flushes the WAL up to it,
-- these events included. What a crash can lose is the last few hundred milliseconds of
-- events of a run still going (the WAL writer flushes asynchronous commits within
-- 3 x wal_writer_delay), which followers may already have read (an asynchronous commit is
-- visible at once); an attempt that goes on recording after the crash numbers its next
-- events from the newest seq that survived, so those seqs are reused for new events.
-- The setting sits in a MATERIALIZED CTE joined into the locking query, so it is evaluated
-- whenever a run row is locked, and so in every transaction that stores anything.
WITH async AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true) AS synchronous_commit
), run AS MATERIALIZED (
    SELECT r.id
      FROM {s}.runs r, async
     WHERE r.org = $1 AND r.id = $2 AND r.claim_token = $3
       AND r.status IN ('pending', 'running')
       FOR SHARE OF r
), last AS MATERIALIZED (
    SELECT run.id, (SELECT coalesce(max(e.seq), 0) FROM {s}.run_events e
                     WHERE e.run_id = run.id) AS seq
      FROM run
), added AS (
    INSERT INTO {s}.run_events (run_id, seq, attempt, data)
    SELECT last.id, last.seq + n.ordinality, $5, n.data
      FROM last, unnest($4::text[]) WITH ORDINALITY AS n (data, ordinality)
    RETURNING seq
), woken AS (
    -- Only when something was stored: an empty append changes nothing to wake anyone for.
    SELECT count(pg_notify($6, 'events:' || run.id)) AS n
      FROM run
     WHERE cardinality($4::text[]) > 0
)
SELECT last.seq + (SELECT count(*) FROM added) AS last_seq
  FROM last, woken
