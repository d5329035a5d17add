//! Erasure: removing every trace of a conversation, of one agent's conversations in an org,
//! or of a whole org ([`EraseScope`], [`SessionStore::erase`](crate::SessionStore::erase)).

use serde::{Deserialize, Serialize};

use crate::id::{AgentId, ConversationKey, OrgId};

/// What [`SessionStore::erase`](crate::SessionStore::erase) removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EraseScope {
    /// One conversation.
    Conversation(ConversationKey),
    /// Every conversation of one agent in one org.
    Agent(OrgId, AgentId),
    /// Everything of one org.
    Org(OrgId),
}

impl EraseScope {
    /// The org the scope lies in (erasure never crosses orgs).
    pub fn org(&self) -> &OrgId {
        match self {
            EraseScope::Conversation(key) => &key.org,
            EraseScope::Agent(org, _) | EraseScope::Org(org) => org,
        }
    }

    /// The agent, when the scope is one agent's or one conversation.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            EraseScope::Conversation(key) => Some(&key.agent),
            EraseScope::Agent(_, agent) => Some(agent),
            EraseScope::Org(_) => None,
        }
    }

    /// Whether `key` lies in the scope.
    pub fn covers(&self, key: &ConversationKey) -> bool {
        match self {
            EraseScope::Conversation(scope) => scope == key,
            EraseScope::Agent(org, agent) => key.org == *org && key.agent == *agent,
            EraseScope::Org(org) => key.org == *org,
        }
    }
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// Conversations that had anything stored (a transcript, runs, a lease or counters).
    pub conversations: u64,
    /// Snapshots (completed and forensic copies).
    pub snapshots: u64,
    /// Runs, whatever their status (with their idempotency keys).
    pub runs: u64,
    /// Stored run events.
    pub events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_its_conversations_and_never_another_orgs() {
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let sibling = ConversationKey::parse("acme", "bot", "c2").unwrap();
        let other_agent = ConversationKey::parse("acme", "helper", "c1").unwrap();
        let other_org = ConversationKey::parse("globex", "bot", "c1").unwrap();
        let conversation = EraseScope::Conversation(key.clone());
        let agent = EraseScope::Agent(key.org.clone(), key.agent.clone());
        let org = EraseScope::Org(key.org.clone());
        assert!(conversation.covers(&key) && !conversation.covers(&sibling));
        assert!(agent.covers(&sibling) && !agent.covers(&other_agent));
        assert!(org.covers(&other_agent) && !org.covers(&other_org));
        for scope in [&conversation, &agent, &org] {
            assert_eq!(scope.org(), &key.org);
        }
        assert_eq!(org.agent(), None);
        assert_eq!(agent.agent(), Some(&key.agent));
    }
}
