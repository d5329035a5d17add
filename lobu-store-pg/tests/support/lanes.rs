//! Lanes (migration 20261204000000) checked against the runs they count.

use sqlx::PgPool;

/// A lane as the runs say it should be: (org, agent, conversation, unfinished).
type Counted = (String, String, String, i64);

/// `lobu.lanes` agrees with the runs: every conversation with unfinished runs has a lane
/// counting exactly them, every other lane counts 0, and no lane's `ready_seq` is above its
/// oldest unfinished run (the claim's order relies on nothing more). `when` names the step.
pub(crate) async fn assert_lanes_exact(pool: &PgPool, when: &str) {
    let lanes: Vec<Counted> = sqlx::query_as(
        "SELECT org, agent, conversation, unfinished::bigint FROM lobu.lanes \
          WHERE unfinished <> 0 ORDER BY org, agent, conversation",
    )
    .fetch_all(pool)
    .await
    .expect("read lanes");
    let runs: Vec<Counted> = sqlx::query_as(
        "SELECT org, agent, conversation, count(*) FROM lobu.runs \
          WHERE status IN ('pending', 'running') \
          GROUP BY org, agent, conversation ORDER BY org, agent, conversation",
    )
    .fetch_all(pool)
    .await
    .expect("count unfinished runs");
    assert_eq!(lanes, runs, "lanes after {when}");
    let ahead: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT l.conversation, l.ready_seq, min(r.seq) FROM lobu.lanes l \
           JOIN lobu.runs r ON r.org = l.org AND r.agent = l.agent \
                           AND r.conversation = l.conversation \
          WHERE r.status IN ('pending', 'running') \
          GROUP BY l.conversation, l.ready_seq HAVING l.ready_seq > min(r.seq)",
    )
    .fetch_all(pool)
    .await
    .expect("compare ready_seq");
    assert!(
        ahead.is_empty(),
        "lanes ahead of their head after {when}: {ahead:?}"
    );
}
