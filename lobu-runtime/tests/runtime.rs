//! The lifecycle on every store: each scenario of `scenarios/` once per backend.

mod common;
mod scenarios;

macro_rules! all_scenarios {
    ($store:expr) => {
        $crate::for_store!($store;
            one_turn_end_to_end,
            ten_turns_in_order_on_one_conversation,
            many_conversations_run_in_parallel,
            a_failed_turn_leaves_the_transcript_as_before,
            a_timed_out_turn_leaves_no_trace,
            retries_then_success,
            exhausted_attempts_fail_visibly,
            a_panicking_agent_fails_the_attempt_and_the_worker_goes_on,
            an_oversized_transcript_fails_visibly_and_keeps_the_head,
            a_store_that_stops_answering_fails_the_attempt_not_the_worker,
            a_persist_whose_answer_is_lost_completes_the_run_once,
            a_commit_that_lands_after_the_run_failed_is_refused,
            a_completion_that_fails_for_a_while_is_retried_in_the_same_attempt,
            reset_between_turns_forgets_the_conversation,
            reset_waits_for_the_in_flight_turn_then_clears_it,
            no_replica_serves_a_reset_conversation_from_its_cache,
            shutdown_within_the_grace_period_finishes_the_turn,
            shutdown_past_the_grace_period_hands_the_turn_back_uncounted,
            the_worker_loop_runs_once_and_not_after_shutdown,
            a_claim_that_returns_after_shutdown_hands_its_run_back,
            two_runtimes_never_overlap_a_conversation_and_run_each_turn_once,
            a_stalled_replica_stops_its_turn_before_another_takes_over,
            a_stalled_replica_whose_store_clock_runs_ahead_still_stops_before_another_takes_over,
            a_turn_committed_on_its_last_attempt_whose_answer_was_lost_ends_completed_once,
            a_damaged_conversation_fails_its_run_visibly_and_the_next_run_and_a_reset_proceed,
            a_replica_that_stops_renewing_cancels_its_turn_and_hands_it_back,
            a_claim_answered_too_late_is_handed_back_unrun,
            a_late_subscriber_gets_the_whole_run_replayed,
            a_subscriber_sees_the_end_of_a_run_executed_by_another_replica,
            another_orgs_run_is_not_found,
            bad_input_is_a_typed_error_and_queues_nothing,
            a_repeated_idempotency_key_runs_the_turn_once,
            a_reset_sent_again_with_its_key_is_one_reset_and_clears_no_later_turn,
            a_conversation_held_by_a_lease_is_not_claimed_until_the_lease_ends,
            a_lease_left_by_a_dead_holder_keeps_the_run_waiting_until_it_lapses,
            a_turn_persisted_before_a_crash_is_completed_not_run_again,
            a_subscriber_on_a_gateway_replica_gets_every_live_event_of_another_replicas_run,
            a_stream_resumed_after_any_event_gets_exactly_the_rest,
            a_finished_runs_events_are_replayed_after_every_replica_restarts,
            a_run_retried_on_another_replica_streams_both_attempts_each_marked,
            a_thousand_subscribers_of_a_run_share_one_reader_of_the_store,
            output_is_stored_coalesced_and_past_the_cap_still_streamed_whole,
            cancelling_a_pending_run_means_it_never_starts,
            cancelling_a_running_turn_on_another_replica_stops_it_and_persists_nothing,
            a_permanent_error_fails_the_run_after_one_attempt,
            retries_back_off_exponentially_within_the_cap,
            retention_removes_old_finished_runs_and_keeps_every_transcript,
            two_replicas_never_run_a_retention_pass_at_the_same_time,
            ten_thousand_turns_with_retention_keep_run_records_and_files_bounded,
            an_erased_conversation_is_gone_and_starts_over_from_nothing,
            reject_while_a_turn_runs_is_refused_and_queues_nothing,
            interrupt_stops_the_running_turn_and_runs_the_new_message,
            rollback_cancels_the_running_and_the_waiting_turns,
            a_steered_message_taken_by_the_running_turn_appears_once_in_that_turn,
            a_steered_message_the_turn_does_not_take_runs_next_as_its_own_turn,
            a_steered_message_taken_by_a_failed_attempt_is_taken_again_not_lost_or_doubled,
        );
    };
}

mod memory {
    all_scenarios!(crate::common::Store::Memory);
    crate::for_store!(crate::common::Store::Memory;
        a_waiter_on_another_replica_learns_of_the_end_without_a_poll,
    );
}

mod file {
    all_scenarios!(crate::common::Store::File);
}

mod pg {
    all_scenarios!(crate::common::Store::Pg);
    crate::for_store!(crate::common::Store::Pg;
        a_waiter_on_another_replica_learns_of_the_end_without_a_poll,
    );
}
