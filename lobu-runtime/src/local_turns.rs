//! The turns this process executes, so a cancellation asked for here reaches its turn at
//! once instead of at the next heartbeat.
//!
//! A cancellation is stored by the backend (any replica's worker learns it at its next
//! heartbeat). When the turn runs in this process, the gateway also pokes its heartbeat,
//! which renews at once and so hears `Cancelled` within one store round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lobu_core::{Claim, ConversationKey, RunId};
use tokio::sync::Notify;

/// Runs executing here, each with the poke its heartbeat listens to.
#[derive(Default)]
pub(crate) struct LocalTurns {
    turns: Mutex<HashMap<RunId, (ConversationKey, Arc<Notify>)>>,
}

impl LocalTurns {
    /// Register `claim`'s run for as long as the returned guard lives.
    pub(crate) fn register(self: &Arc<Self>, claim: &Claim) -> Registered {
        let poke = Arc::new(Notify::new());
        let entry = (claim.key.clone(), poke.clone());
        self.lock().insert(claim.run.clone(), entry);
        Registered {
            turns: self.clone(),
            run: claim.run.clone(),
            poke,
        }
    }

    /// Make `run`'s heartbeat renew now, if it executes here.
    pub(crate) fn poke_run(&self, run: &RunId) {
        if let Some((_, poke)) = self.lock().get(run) {
            poke.notify_one();
        }
    }

    /// Make the heartbeat of the conversation's run renew now, if one executes here.
    pub(crate) fn poke_conversation(&self, key: &ConversationKey) {
        let turns = self.lock();
        for (_, poke) in turns.values().filter(|(of, _)| of == key) {
            poke.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, (ConversationKey, Arc<Notify>)>> {
        // Every update is one insert or remove, so a poisoned lock holds consistent data.
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered run; unregistered when dropped.
pub(crate) struct Registered {
    turns: Arc<LocalTurns>,
    run: RunId,
    /// What the run's heartbeat listens to.
    pub(crate) poke: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.turns.lock().remove(&self.run);
    }
}
