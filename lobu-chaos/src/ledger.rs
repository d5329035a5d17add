//! What the client saw: every accepted turn with its run id, in submission order per
//! conversation, the resets between them, and how each run ended.

/// How a run ended, as `GET /v1/runs/{id}` reported it after the queue drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    /// `failed`, `timeout` or `cancelled`: visible, with its error.
    Failed(String),
    /// Still `pending` or `running` when the harness gave up waiting, or unknown (404).
    NeverEnded(String),
}

/// What a turn's text asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A message or a `/sleep`: completes unless its attempts ran out.
    Answer,
    /// `/fail`: must fail.
    Failure,
}

/// One accepted turn.
#[derive(Debug, Clone)]
pub(crate) struct TurnRecord {
    pub(crate) run: String,
    pub(crate) text: String,
    pub(crate) expect: Expect,
    /// Filled in after the drain.
    pub(crate) ending: Option<Ending>,
    /// Attempts the queue reported.
    pub(crate) attempts: u64,
}

/// One step the host accepted, in submission order.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    Turn(TurnRecord),
    /// A reset the host confirmed (`{"deleted": n}`).
    Reset,
}

/// One conversation as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct ConversationLedger {
    /// Index into [`ORGS`](crate::plan::ORGS).
    pub(crate) org: usize,
    pub(crate) conversation: String,
    pub(crate) entries: Vec<Entry>,
    /// Idempotency keys sent again that answered with another run id (each one a second run).
    pub(crate) resend_mismatches: Vec<String>,
    /// How many keys were sent again.
    pub(crate) resends: u64,
    /// Why the script stopped early, if it did (the fleet stopped answering).
    pub(crate) error: Option<String>,
}

impl ConversationLedger {
    pub(crate) fn new(org: usize, conversation: String) -> Self {
        ConversationLedger {
            org,
            conversation,
            entries: Vec::new(),
            resend_mismatches: Vec::new(),
            resends: 0,
            error: None,
        }
    }

    /// Every accepted turn, in submission order.
    pub(crate) fn turns(&self) -> impl Iterator<Item = &TurnRecord> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Turn(turn) => Some(turn),
            Entry::Reset => None,
        })
    }

    pub(crate) fn turns_mut(&mut self) -> impl Iterator<Item = &mut TurnRecord> {
        self.entries.iter_mut().filter_map(|e| match e {
            Entry::Turn(turn) => Some(turn),
            Entry::Reset => None,
        })
    }

    /// `(turns before the last reset, turns after it)`.
    pub(crate) fn split_at_last_reset(&self) -> (Vec<&TurnRecord>, Vec<&TurnRecord>) {
        let last_reset = self.entries.iter().rposition(|e| matches!(e, Entry::Reset));
        let (before, after) = match last_reset {
            Some(at) => self.entries.split_at(at + 1),
            None => self.entries.split_at(0),
        };
        (turns_of(before), turns_of(after))
    }
}

fn turns_of(entries: &[Entry]) -> Vec<&TurnRecord> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Turn(turn) => Some(turn),
            Entry::Reset => None,
        })
        .collect()
}
