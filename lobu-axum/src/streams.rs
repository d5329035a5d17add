//! A bound on the event streams one org holds open at once: a stream holds a task and a
//! subscription for as long as the client keeps it, so one tenant's clients (or a leak in
//! them) must not take them all. Past the bound a new stream is `429`; closing one (the
//! client goes away, the run ends) frees its slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use lobu_core::OrgId;

use crate::error::ApiError;

/// The open streams of each org.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    per_org: usize,
    open: Mutex<HashMap<OrgId, usize>>,
}

/// One open stream; dropping it (with the response body) frees the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    org: OrgId,
}

impl StreamSlots {
    /// At most `per_org` streams per org.
    pub(crate) fn new(per_org: usize) -> Arc<Self> {
        Arc::new(StreamSlots {
            per_org,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `org`, or `429` when it holds `per_org` already.
    pub(crate) fn take(self: &Arc<Self>, org: &OrgId) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(org.clone()).or_default();
        if *count >= self.per_org {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this org has {} event streams open, the most a replica serves; close one",
                    self.per_org
                ),
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            org: org.clone(),
        })
    }

    #[cfg(test)]
    fn open(&self, org: &OrgId) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(org).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.org) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_past_its_bound_is_refused_and_a_closed_stream_frees_a_slot() {
        let slots = StreamSlots::new(2);
        let (acme, globex) = (OrgId::new("acme").unwrap(), OrgId::new("globex").unwrap());
        let first = slots.take(&acme).unwrap();
        let _second = slots.take(&acme).unwrap();
        let refused = slots.take(&acme).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let _other = slots.take(&globex).expect("another org has its own bound");
        drop(first);
        assert_eq!(slots.open(&acme), 1);
        let _third = slots.take(&acme).expect("a freed slot");
    }
}
