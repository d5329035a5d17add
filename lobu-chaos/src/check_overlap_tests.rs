use super::*;

fn claim(run: &str, fence: u64) -> ClaimRef {
    ClaimRef {
        run: run.to_owned(),
        key: "\"acme\"/\"support\"/\"chat-0\"".to_owned(),
        fence,
    }
}

fn started(at: Nanos, run: &str, fence: u64) -> LogEvent {
    LogEvent::Started {
        at,
        claim: claim(run, fence),
    }
}

fn ended(at: Nanos, run: &str, fence: u64) -> LogEvent {
    LogEvent::Ended {
        at,
        claim: claim(run, fence),
        outcome: "commit".to_owned(),
    }
}

#[test]
fn turns_one_after_another_do_not_overlap() {
    let mut all = windows(0, &[started(10, "a", 1), ended(20, "a", 1)], 100, "stopped");
    all.extend(windows(
        1,
        &[started(21, "b", 2), ended(30, "b", 2)],
        100,
        "stopped",
    ));
    let findings = check_overlaps(&all);
    assert!(findings.is_clean(), "{findings:?}");
}

#[test]
fn a_turn_starting_before_another_ended_is_an_overlap() {
    let mut all = windows(0, &[started(10, "a", 1), ended(20, "a", 1)], 100, "stopped");
    all.extend(windows(
        1,
        &[started(15, "b", 2), ended(30, "b", 2)],
        100,
        "stopped",
    ));
    let findings = check_overlaps(&all);
    assert_eq!(findings.overlaps.len(), 1, "{findings:?}");
    assert!(findings.corrupt.is_empty());
}

#[test]
fn a_killed_replicas_open_turn_ends_at_its_kill_time() {
    let killed = windows(0, &[started(10, "a", 1)], 50, "killed");
    assert_eq!(killed[0].end, 50);
    assert_eq!(killed[0].outcome, "killed");
    let mut all = killed.clone();
    all.extend(windows(
        1,
        &[started(60, "a", 2), ended(70, "a", 2)],
        100,
        "stopped",
    ));
    assert!(check_overlaps(&all).is_clean());
    let mut early = killed;
    early.extend(windows(
        1,
        &[started(40, "a", 2), ended(70, "a", 2)],
        100,
        "stopped",
    ));
    assert_eq!(check_overlaps(&early).overlaps.len(), 1);
}

#[test]
fn a_long_turn_overlapping_two_later_ones_counts_each() {
    let mut all = windows(0, &[started(0, "a", 1), ended(100, "a", 1)], 200, "stopped");
    all.extend(windows(
        1,
        &[started(10, "b", 2), ended(20, "b", 2)],
        200,
        "stopped",
    ));
    all.extend(windows(
        2,
        &[started(30, "c", 3), ended(40, "c", 3)],
        200,
        "stopped",
    ));
    assert_eq!(check_overlaps(&all).overlaps.len(), 2);
}

#[test]
fn a_fence_that_does_not_grow_with_the_claims_is_corrupt() {
    let mut all = windows(0, &[started(10, "a", 5), ended(20, "a", 5)], 100, "stopped");
    all.extend(windows(
        1,
        &[started(30, "b", 5), ended(40, "b", 5)],
        100,
        "stopped",
    ));
    let findings = check_overlaps(&all);
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    assert!(findings.overlaps.is_empty());
}

#[test]
fn other_conversations_may_run_at_the_same_time() {
    let mut all = windows(0, &[started(10, "a", 1), ended(20, "a", 1)], 100, "stopped");
    let mut other = windows(1, &[started(12, "b", 2), ended(18, "b", 2)], 100, "stopped");
    other[0].claim.key = "\"globex\"/\"support\"/\"chat-0\"".to_owned();
    all.extend(other);
    assert!(check_overlaps(&all).is_clean());
}
