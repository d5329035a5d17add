//! The conformance suite every lobu backend runs (feature `testkit`).
//!
//! **Not semver-stable**: clauses are added as the contract is sharpened, and a new clause
//! may fail a backend that passed before. Pin lobu-core exactly if that matters to you.
//!
//! Each clause is one `pub async fn` that checks one sentence of the `# Contract` of
//! [`SessionStore`](crate::SessionStore), [`ConversationLocks`](crate::ConversationLocks) or
//! [`RunQueue`](crate::RunQueue), and panics with a message naming what broke. Clauses take
//! a [`Backend`] (and, where backends legitimately differ, [`Capabilities`]).
//!
//! [`conformance_tests!`](crate::conformance_tests) stamps one test per clause. Give it the
//! test attribute and a setup closure; the closure may take the test function's arguments
//! and returns anything that converts into a [`TestBackend`]: a [`Backend`], a
//! [`MemoryBackend`], or a `TestBackend` holding a guard (such
//! as a temporary directory) that must live as long as the test.
//!
//! ```no_run
//! use lobu_core::memory::MemoryBackend;
//!
//! // In a backend crate's `tests/conformance.rs`:
//! lobu_core::conformance_tests!(#[tokio::test] || async { MemoryBackend::new() });
//! ```
//!
//! A store that needs a guard (here a temporary directory, with the in-memory backend
//! standing in for a file store), and capabilities:
//!
//! ```no_run
//! use lobu_core::memory::MemoryBackend;
//! use lobu_core::testkit::{Capabilities, TestBackend};
//!
//! lobu_core::conformance_tests!(#[tokio::test] || async {
//!     let dir = tempfile::tempdir().expect("temporary directory");
//!     let backend = MemoryBackend::new().into_backend(); // e.g. FileStore::open(dir.path())
//!     TestBackend::new(backend)
//!         .with_capabilities(Capabilities::default().settle(std::time::Duration::from_secs(1)))
//!         .with_guard(dir)
//! });
//! ```
//!
//! With `#[sqlx::test]`, the setup takes the pool the attribute injects:
//!
//! ```text
//! lobu_core::conformance_tests!(
//!     #[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
//!     |pool: sqlx::PgPool| async move { PgStore::new(pool).into_backend() }
//! );
//! ```
//!
//! # Sharing one backend
//!
//! Every clause makes its own random org, agent and conversation ids and never assumes an
//! empty store, so clauses may run concurrently on one backend. Queue clauses claim whatever
//! the backend hands out and give other clauses' runs straight back (with `release`, which
//! counts no attempt). Four clauses are exceptions: [`prune_removes_idle_conversations_and_keeps_fresh_ones`],
//! [`prune_never_removes_a_conversation_whose_run_is_claimed`],
//! [`prune_runs_removes_old_terminal_runs_and_never_snapshots`] and
//! [`prune_events_removes_events_of_runs_finished_before_the_cutoff`] delete every org's old
//! data, as do the clauses of retention with a policy
//! ([`a_dry_run_counts_what_a_prune_would_remove_and_removes_nothing`] and the four after it),
//! so run them on a backend of their own (the macro gives every clause its own).

mod control;
mod erase;
mod events;
pub mod fuzz;
mod guards;
mod history;
pub mod hostile;
mod isolation;
mod leases;
mod multitask;
mod ownership;
mod portable;
mod queue;
mod retention;
mod retries;
mod sessions;
mod support;

use std::any::Any;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use crate::backend::Backend;
use crate::memory::MemoryBackend;

pub use control::{
    a_cancelled_claim_is_told_at_its_heartbeat_and_cannot_commit,
    a_failure_with_its_own_delay_is_retried_after_it,
    a_permanent_failure_ends_the_run_with_attempts_left,
    cancelling_a_run_whose_claim_lapsed_ends_it,
    cancelling_a_waiting_run_ends_it_and_it_never_runs, releasing_a_cancelled_claim_ends_the_run,
};
pub use erase::erasure_removes_every_trace_of_its_scope_and_nothing_else;
pub use events::{
    bad_events_are_typed_errors_and_store_nothing,
    events_are_numbered_in_order_and_replayed_after_a_seq,
    only_the_newest_claim_of_an_unfinished_run_records_events,
    prune_events_removes_events_of_runs_finished_before_the_cutoff,
    recording_events_wakes_a_follower_of_the_run,
};
pub use guards::{
    a_fence_that_was_never_issued_is_fenced,
    a_stale_expected_version_conflicts_and_changes_nothing,
    a_stale_fence_is_fenced_and_changes_nothing,
    a_transcript_over_the_size_limit_is_too_large_and_stores_nothing,
    of_concurrent_writers_with_one_expected_version_exactly_one_wins,
};
pub use history::{
    a_chain_of_turns_hydrates_the_last_turn_exactly, clear_counts_non_completed_snapshots_too,
    clear_removes_one_conversation_and_leaves_its_sibling,
    listing_pages_through_an_agents_conversations_in_order,
    prune_removes_idle_conversations_and_keeps_fresh_ones,
};
pub use isolation::{
    conversations_in_different_orgs_never_see_each_other,
    ids_a_naive_sanitiser_would_merge_stay_distinct,
};
pub use leases::{
    a_held_lease_is_busy_for_everyone_else, an_expired_lease_is_taken_over_with_a_larger_fence,
    an_expired_lease_nobody_took_can_be_renewed, durations_out_of_range_are_invalid_input,
    fences_grow_across_release_expiry_and_clear, renewing_keeps_a_lease_alive,
};
pub use multitask::{
    a_commit_taking_a_run_no_longer_offered_conflicts_and_changes_nothing,
    interrupt_cancels_the_started_turn_and_keeps_the_waiting_runs,
    reject_refuses_while_a_run_is_unfinished_and_queues_nothing,
    rollback_cancels_every_turn_and_runs_the_new_one,
    steered_runs_complete_with_the_turn_that_took_them,
};
pub use ownership::{
    a_claim_and_a_lease_of_one_conversation_exclude_each_other,
    a_clear_landing_after_a_newer_turn_is_fenced_and_the_turn_survives,
    a_commit_that_fails_a_check_changes_nothing_and_a_retry_is_harmless,
    a_commit_writes_the_head_and_completes_the_run_together,
    an_append_commit_is_its_base_then_its_new_bytes, an_append_persist_sent_twice_is_stored_once,
    prune_never_removes_a_conversation_whose_run_is_claimed,
};
pub use portable::{
    an_export_imported_elsewhere_exports_the_same_document,
    an_import_never_reuses_a_version_the_conversation_had,
    an_imported_head_is_served_and_continued_above_its_version,
    bad_imports_are_typed_errors_and_write_nothing,
    importing_again_is_unchanged_and_another_head_conflicts,
    runs_lists_an_orgs_runs_by_state_and_agent_in_id_order,
    scan_pages_through_every_orgs_conversations_in_key_order,
};
pub use queue::{
    a_follower_waiting_for_a_run_is_woken_when_it_ends,
    a_submitted_run_is_pending_with_its_payload,
    bad_submissions_are_typed_errors_and_store_nothing,
    one_conversation_never_has_two_claimed_runs_while_others_proceed,
    queue_depth_counts_waiting_runs, runs_of_one_conversation_are_claimed_first_in_first_out,
    submitting_with_a_used_idempotency_key_returns_the_first_run,
    wait_for_work_returns_by_its_deadline,
};
pub use retention::{
    a_bounded_prune_removes_at_most_its_limit_and_the_next_goes_on,
    a_dry_run_counts_what_a_prune_would_remove_and_removes_nothing,
    an_idle_prune_of_one_agent_leaves_the_others, failed_runs_are_kept_for_their_own_window,
    forensic_copies_have_their_own_window,
};
pub use retries::{
    a_heartbeat_keeps_a_claim_from_being_redelivered, a_stale_claim_is_fenced_and_changes_nothing,
    an_expired_claim_is_redelivered_as_the_next_attempt,
    an_expired_claim_on_the_last_attempt_fails_the_run,
    failed_attempts_are_retried_after_the_delay_then_fail_for_good,
    prune_runs_removes_old_terminal_runs_and_never_snapshots,
    releasing_a_claim_does_not_count_an_attempt,
};
pub use sessions::{
    a_later_attempt_of_a_run_may_complete_after_a_failed_one,
    divergent_bytes_for_the_same_run_conflict, hydrate_of_an_unknown_conversation_is_none,
    non_completed_snapshots_are_never_hydrated, non_utf8_transcripts_round_trip_or_are_refused,
    persist_then_hydrate_is_byte_exact,
    persisting_the_same_run_and_bytes_again_returns_the_same_version,
    the_same_run_may_extend_its_own_head,
};

/// What a backend legitimately does differently; clauses that depend on it take this.
/// Build it from [`Capabilities::default`] with the builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend stores transcripts as text (e.g. a PostgreSQL `text` column): invalid
    /// UTF-8 and NUL bytes are refused with `InvalidInput` instead of being stored.
    /// Default `false`: any bytes round-trip.
    pub utf8_transcripts_only: bool,
    /// The lease, claim lease and retry delay that clauses wait out. Default 100 ms.
    pub short_lease: Duration,
    /// How far past a short lease, retry delay or cutoff a clause sleeps before it expects
    /// the deadline to have passed (clock granularity, a database server's clock). Default
    /// 400 ms.
    pub settle: Duration,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            utf8_transcripts_only: false,
            short_lease: Duration::from_millis(100),
            settle: Duration::from_millis(400),
        }
    }
}

impl Capabilities {
    /// Transcripts must be UTF-8 without NUL; others are `InvalidInput`.
    pub fn utf8_transcripts_only(mut self) -> Self {
        self.utf8_transcripts_only = true;
        self
    }

    /// The lease, claim lease and retry delay clauses wait out.
    pub fn short_lease(mut self, lease: Duration) -> Self {
        self.short_lease = lease;
        self
    }

    /// How long past a deadline clauses sleep.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long to sleep for a short lease to be clearly over.
    pub(crate) fn past_short_lease(&self) -> Duration {
        self.short_lease + self.settle
    }
}

/// What a setup returns to [`conformance_tests!`](crate::conformance_tests): the backend,
/// its [`Capabilities`], and a guard kept alive until the test ends (a temporary directory,
/// a server handle).
#[non_exhaustive]
pub struct TestBackend {
    /// The backend under test.
    pub backend: Backend,
    /// How it legitimately differs.
    pub capabilities: Capabilities,
    guard: Option<Box<dyn Any + Send + Sync>>,
}

impl TestBackend {
    /// A backend with default capabilities and no guard.
    pub fn new(backend: Backend) -> Self {
        TestBackend {
            backend,
            capabilities: Capabilities::default(),
            guard: None,
        }
    }

    /// Keep `guard` alive as long as this value (and so for the whole test).
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// Declare how the backend differs.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
}

impl From<Backend> for TestBackend {
    fn from(backend: Backend) -> Self {
        TestBackend::new(backend)
    }
}

impl From<MemoryBackend> for TestBackend {
    fn from(backend: MemoryBackend) -> Self {
        TestBackend::new(backend.into_backend())
    }
}

impl Deref for TestBackend {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.backend
    }
}

impl fmt::Debug for TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBackend")
            .field("backend", &self.backend)
            .field("capabilities", &self.capabilities)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

/// Stamp one test per conformance clause.
///
/// `conformance_tests!(#[attribute]… setup)` where `setup` is a closure, `|| async { … }` or
/// `|arg: Type, …| async move { … }`, whose future yields anything that converts into a
/// [`TestBackend`](crate::testkit::TestBackend). Every generated test function takes the
/// closure's arguments, so attributes that inject them (`#[sqlx::test]`) work; each test
/// calls the setup once and keeps its result alive until the test ends. The tests are named
/// after the clauses, in the module where the macro is invoked.
///
/// ```no_run
/// lobu_core::conformance_tests!(#[tokio::test] || async {
///     lobu_core::memory::MemoryBackend::new()
/// });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$($attr:tt)*])+ $(move)? || $setup:expr $(,)?) => {
        $crate::conformance_tests!(@all [$(#[$($attr)*])+] [] [(|| $setup)()]);
    };
    ($(#[$($attr:tt)*])+ $(move)? |$($arg:ident : $ty:ty),+ $(,)?| $setup:expr $(,)?) => {
        $crate::conformance_tests!(
            @all [$(#[$($attr)*])+] [$($arg: $ty),+] [(|$($arg: $ty),+| $setup)($($arg),+)]
        );
    };
    (@all $attrs:tt $args:tt $setup:tt) => {
        $crate::conformance_tests!(@each plain $attrs $args $setup
            hydrate_of_an_unknown_conversation_is_none
            persist_then_hydrate_is_byte_exact
            non_completed_snapshots_are_never_hydrated
            persisting_the_same_run_and_bytes_again_returns_the_same_version
            the_same_run_may_extend_its_own_head
            divergent_bytes_for_the_same_run_conflict
            a_later_attempt_of_a_run_may_complete_after_a_failed_one
            a_stale_expected_version_conflicts_and_changes_nothing
            a_stale_fence_is_fenced_and_changes_nothing
            a_fence_that_was_never_issued_is_fenced
            of_concurrent_writers_with_one_expected_version_exactly_one_wins
            a_transcript_over_the_size_limit_is_too_large_and_stores_nothing
            a_chain_of_turns_hydrates_the_last_turn_exactly
            clear_removes_one_conversation_and_leaves_its_sibling
            clear_counts_non_completed_snapshots_too
            listing_pages_through_an_agents_conversations_in_order
            conversations_in_different_orgs_never_see_each_other
            ids_a_naive_sanitiser_would_merge_stay_distinct
            a_held_lease_is_busy_for_everyone_else
            durations_out_of_range_are_invalid_input
            a_submitted_run_is_pending_with_its_payload
            runs_of_one_conversation_are_claimed_first_in_first_out
            one_conversation_never_has_two_claimed_runs_while_others_proceed
            submitting_with_a_used_idempotency_key_returns_the_first_run
            releasing_a_claim_does_not_count_an_attempt
            a_stale_claim_is_fenced_and_changes_nothing
            bad_submissions_are_typed_errors_and_store_nothing
            queue_depth_counts_waiting_runs
            wait_for_work_returns_by_its_deadline
            a_follower_waiting_for_a_run_is_woken_when_it_ends
            a_claim_and_a_lease_of_one_conversation_exclude_each_other
            a_commit_writes_the_head_and_completes_the_run_together
            a_commit_that_fails_a_check_changes_nothing_and_a_retry_is_harmless
            an_append_commit_is_its_base_then_its_new_bytes
            an_append_persist_sent_twice_is_stored_once
            events_are_numbered_in_order_and_replayed_after_a_seq
            bad_events_are_typed_errors_and_store_nothing
            recording_events_wakes_a_follower_of_the_run
            a_permanent_failure_ends_the_run_with_attempts_left
            cancelling_a_waiting_run_ends_it_and_it_never_runs
            a_cancelled_claim_is_told_at_its_heartbeat_and_cannot_commit
            releasing_a_cancelled_claim_ends_the_run
            reject_refuses_while_a_run_is_unfinished_and_queues_nothing
            interrupt_cancels_the_started_turn_and_keeps_the_waiting_runs
            rollback_cancels_every_turn_and_runs_the_new_one
            steered_runs_complete_with_the_turn_that_took_them
            a_commit_taking_a_run_no_longer_offered_conflicts_and_changes_nothing
            erasure_removes_every_trace_of_its_scope_and_nothing_else
            an_export_imported_elsewhere_exports_the_same_document
            importing_again_is_unchanged_and_another_head_conflicts
            an_imported_head_is_served_and_continued_above_its_version
            an_import_never_reuses_a_version_the_conversation_had
            bad_imports_are_typed_errors_and_write_nothing
            scan_pages_through_every_orgs_conversations_in_key_order
            runs_lists_an_orgs_runs_by_state_and_agent_in_id_order
        );
        $crate::conformance_tests!(@each with_capabilities $attrs $args $setup
            non_utf8_transcripts_round_trip_or_are_refused
            prune_removes_idle_conversations_and_keeps_fresh_ones
            renewing_keeps_a_lease_alive
            an_expired_lease_is_taken_over_with_a_larger_fence
            an_expired_lease_nobody_took_can_be_renewed
            fences_grow_across_release_expiry_and_clear
            an_expired_claim_is_redelivered_as_the_next_attempt
            an_expired_claim_on_the_last_attempt_fails_the_run
            failed_attempts_are_retried_after_the_delay_then_fail_for_good
            a_heartbeat_keeps_a_claim_from_being_redelivered
            prune_runs_removes_old_terminal_runs_and_never_snapshots
            a_clear_landing_after_a_newer_turn_is_fenced_and_the_turn_survives
            prune_never_removes_a_conversation_whose_run_is_claimed
            only_the_newest_claim_of_an_unfinished_run_records_events
            prune_events_removes_events_of_runs_finished_before_the_cutoff
            a_failure_with_its_own_delay_is_retried_after_it
            cancelling_a_run_whose_claim_lapsed_ends_it
            a_dry_run_counts_what_a_prune_would_remove_and_removes_nothing
            an_idle_prune_of_one_agent_leaves_the_others
            failed_runs_are_kept_for_their_own_window
            forensic_copies_have_their_own_window
            a_bounded_prune_removes_at_most_its_limit_and_the_next_goes_on
        );
    };
    (@each $how:ident $attrs:tt $args:tt $setup:tt $($clause:ident)*) => {
        $( $crate::conformance_tests!(@one $how $attrs $args $setup $clause); )*
    };
    (@one plain [$($attr:tt)*] [$($arg:tt)*] [$($setup:tt)*] $clause:ident) => {
        $($attr)*
        async fn $clause($($arg)*) {
            let fixture: $crate::testkit::TestBackend =
                ::core::convert::Into::into($($setup)*.await);
            $crate::testkit::$clause(&fixture.backend).await;
        }
    };
    (@one with_capabilities [$($attr:tt)*] [$($arg:tt)*] [$($setup:tt)*] $clause:ident) => {
        $($attr)*
        async fn $clause($($arg)*) {
            let fixture: $crate::testkit::TestBackend =
                ::core::convert::Into::into($($setup)*.await);
            $crate::testkit::$clause(&fixture.backend, &fixture.capabilities).await;
        }
    };
}
