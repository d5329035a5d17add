//! Transcripts in memory.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{MemoryBackend, State};
use crate::erase::{EraseScope, ErasureReport};
use crate::error::Result;
use crate::export::{ExistingHead, Exported, ImportPlan, Imported, plan_import};
use crate::id::{AgentId, ConversationId, ConversationKey, OrgId, RunId};
use crate::lock::Fence;
use crate::persist_plan::{self, Earlier, Found, Plan, check_fence};
use crate::retention::IdlePrune;
use crate::session::{
    ConversationSummary, Page, Persist, PruneReport, ScanPosition, SessionStore, Snapshot,
    TerminalStatus, Version, check_page_limit, parse_scan_cursor, scan_cursor,
};
use crate::transcript;

#[derive(Default)]
pub(super) struct SessionTable {
    /// Per org and agent, conversations ordered by id text: a listing is a range scan, and
    /// any cursor text, known or not, is a valid place to start.
    agents: HashMap<(OrgId, AgentId), BTreeMap<Box<str>, Conversation>>,
    /// One counter for all conversations, so a version is never handed out twice for one
    /// conversation, whatever was cleared or pruned. Never below an imported version.
    last_version: u64,
    /// The highest version given to each conversation (kept after a clear or a prune,
    /// forgotten by an erasure), so an import knows whether its version is still unused.
    issued: HashMap<ConversationKey, Version>,
}

struct Conversation {
    id: ConversationId,
    /// Every snapshot, all statuses, oldest first.
    snapshots: Vec<Stored>,
    /// The head's title once computed (`Some(None)`: the head has no user text).
    title: Option<Option<String>>,
}

struct Stored {
    version: Version,
    run: RunId,
    status: TerminalStatus,
    bytes: Bytes,
    written_at: SystemTime,
    /// A completed snapshot whose bytes are a prefix of the head's and share its buffer.
    in_head_chain: bool,
}

impl Conversation {
    fn head(&self) -> Option<&Stored> {
        self.snapshots
            .iter()
            .rev()
            .find(|s| s.status == TerminalStatus::Completed)
    }

    fn turns(&self) -> u64 {
        self.snapshots
            .iter()
            .filter(|s| s.status == TerminalStatus::Completed)
            .count() as u64
    }

    /// The length of completed `version` if the head starts with its bytes.
    fn ancestor(&self, version: Version) -> Option<u64> {
        let head = self.head()?;
        self.snapshots
            .iter()
            .find(|s| s.version == version && s.status == TerminalStatus::Completed)
            .filter(|s| head.bytes.starts_with(&s.bytes))
            .map(|s| s.bytes.len() as u64)
    }

    /// What the shared persist plan needs to know about `write` (see
    /// [`persist_plan::Found`]).
    fn earlier(&self, write: &Persist) -> Vec<Earlier> {
        self.snapshots
            .iter()
            .rev()
            .filter(|s| s.run == write.run)
            .map(|s| Earlier {
                version: s.version,
                status: s.status,
                same_bytes: s.bytes == write.transcript,
            })
            .collect()
    }

    fn push(&mut self, version: Version, write: Persist, now: SystemTime) {
        let completed = write.status == TerminalStatus::Completed;
        if completed {
            let extends_head = self
                .head()
                .is_some_and(|h| write.transcript.starts_with(&h.bytes));
            for stored in self.snapshots.iter_mut().filter(|s| s.in_head_chain) {
                if extends_head {
                    stored.bytes = write.transcript.slice(..stored.bytes.len());
                } else {
                    stored.in_head_chain = false;
                }
            }
            self.title = None;
        }
        self.snapshots.push(Stored {
            version,
            run: write.run,
            status: write.status,
            bytes: write.transcript,
            written_at: now,
            in_head_chain: completed,
        });
    }

    fn summary(&mut self) -> Option<ConversationSummary> {
        let head = self.head()?;
        let (version, bytes, updated_at) = (head.version, head.bytes.clone(), head.written_at);
        let title = self
            .title
            .get_or_insert_with(|| transcript::title(&bytes))
            .clone();
        Some(ConversationSummary {
            conversation: self.id.clone(),
            version,
            turns: self.turns(),
            bytes: bytes.len() as u64,
            title,
            updated_at,
        })
    }
}

impl SessionTable {
    pub(super) fn conversation_count(&self) -> usize {
        self.agents.values().map(BTreeMap::len).sum()
    }

    /// The head version of `key`, if it has a head.
    pub(super) fn head_version(&self, key: &ConversationKey) -> Option<Version> {
        self.get(key)
            .and_then(Conversation::head)
            .map(|h| h.version)
    }

    fn get(&self, key: &ConversationKey) -> Option<&Conversation> {
        let agent = self.agents.get(&(key.org.clone(), key.agent.clone()))?;
        agent.get(key.conversation.as_str())
    }

    pub(super) fn persist(
        &mut self,
        key: &ConversationKey,
        mut write: Persist,
        newest_fence: Option<Fence>,
        now: SystemTime,
    ) -> Result<Version> {
        check_fence(key, write.fence, newest_fence)?;
        let existing = self.get(key);
        let head = existing.and_then(Conversation::head);
        if let Some(base_len) = write.base_len.take() {
            // An append: the whole transcript it stands for, then as any write.
            let to = persist_plan::append_to(
                key,
                write.expected,
                base_len,
                head.map(|h| (h.version, h.bytes.len() as u64)),
                || Ok(existing.and_then(|c| c.ancestor(write.expected?))),
            )?;
            let head_bytes = head.map(|h| &h.bytes[..]).unwrap_or_default();
            let appended = std::mem::take(&mut write.transcript);
            write.transcript = persist_plan::rebuild(to, head_bytes, base_len, appended);
        }
        let earlier = existing.map(|c| c.earlier(&write)).unwrap_or_default();
        let found = Found {
            head: head.map(|h| h.version),
            extends_head: head.is_some_and(|h| {
                write.transcript.len() > h.bytes.len() && write.transcript.starts_with(&h.bytes)
            }),
            earlier: &earlier,
        };
        if let Plan::Retry(version) =
            persist_plan::plan(key, &write.run, write.status, write.expected, &found)?
        {
            return Ok(version);
        }
        self.last_version += 1;
        let version = Version(self.last_version);
        self.conversation_mut(key).push(version, write, now);
        self.issued.insert(key.clone(), version);
        Ok(version)
    }

    fn conversation_mut(&mut self, key: &ConversationKey) -> &mut Conversation {
        self.agents
            .entry((key.org.clone(), key.agent.clone()))
            .or_default()
            .entry(key.conversation.as_str().into())
            .or_insert_with(|| Conversation {
                id: key.conversation.clone(),
                snapshots: Vec::new(),
                title: None,
            })
    }

    fn scan(&self, after: Option<&ScanPosition>, limit: usize) -> Page<ConversationKey> {
        let mut keys: Vec<ConversationKey> = self
            .agents
            .iter()
            .flat_map(|((org, agent), conversations)| {
                conversations
                    .values()
                    .filter(|c| c.head().is_some())
                    .map(|c| ConversationKey::new(org.clone(), agent.clone(), c.id.clone()))
            })
            .filter(|key| after.is_none_or(|after| after.is_before(key)))
            .collect();
        keys.sort_by(|a, b| {
            (a.org.as_str(), a.agent.as_str(), a.conversation.as_str()).cmp(&(
                b.org.as_str(),
                b.agent.as_str(),
                b.conversation.as_str(),
            ))
        });
        let next_cursor = (keys.len() > limit).then(|| scan_cursor(&keys[limit - 1]));
        keys.truncate(limit);
        Page {
            items: keys,
            next_cursor,
        }
    }

    fn export(&self, key: &ConversationKey) -> Option<Exported> {
        let head = self.get(key)?.head()?;
        Some(Exported::new(
            key.clone(),
            head.version,
            head.run.clone(),
            head.written_at,
            head.bytes.clone(),
        ))
    }

    fn import(&mut self, incoming: &Exported, max_bytes: usize) -> Result<Imported> {
        let head = self.get(&incoming.key).and_then(Conversation::head);
        let existing = head.map(|h| ExistingHead {
            version: h.version,
            run: h.run.clone(),
            digest: transcript::hash::digest(&h.bytes),
        });
        let last_issued = self.issued.get(&incoming.key).copied();
        let version = match plan_import(incoming, existing.as_ref(), last_issued, max_bytes)? {
            ImportPlan::Unchanged(version) => return Ok(Imported::Unchanged(version)),
            ImportPlan::WriteAt(version) => version,
            ImportPlan::WriteFresh => Version(self.last_version + 1),
        };
        self.last_version = self.last_version.max(version.0);
        let write = Persist {
            run: incoming.run.clone(),
            status: TerminalStatus::Completed,
            transcript: incoming.transcript.clone(),
            expected: None,
            fence: Fence(0),
            base_len: None,
        };
        self.conversation_mut(&incoming.key)
            .push(version, write, incoming.updated_at);
        self.issued.insert(incoming.key.clone(), version);
        Ok(Imported::Written(version))
    }

    fn clear(&mut self, key: &ConversationKey, fence: Fence, newest: Option<Fence>) -> Result<u64> {
        check_fence(key, fence, newest)?;
        Ok(self.clear_unfenced(key))
    }

    fn clear_unfenced(&mut self, key: &ConversationKey) -> u64 {
        let agent_key = (key.org.clone(), key.agent.clone());
        let Some(agent) = self.agents.get_mut(&agent_key) else {
            return 0;
        };
        let removed = agent
            .remove(key.conversation.as_str())
            .map_or(0, |c| c.snapshots.len() as u64);
        if agent.is_empty() {
            self.agents.remove(&agent_key);
        }
        removed
    }

    fn list(
        &mut self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Page<ConversationSummary> {
        let Some(conversations) = self.agents.get_mut(&(org.clone(), agent.clone())) else {
            return Page {
                items: Vec::new(),
                next_cursor: None,
            };
        };
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items: Vec<ConversationSummary> = conversations
            .range_mut::<str, _>((start, Bound::Unbounded))
            .filter_map(|(_, c)| c.summary())
            .take(limit + 1)
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|s| s.conversation.as_str().to_owned())
        } else {
            None
        };
        Page { items, next_cursor }
    }

    /// Remove the scope's conversations; returns their keys and how many snapshots went.
    pub(super) fn erase(&mut self, scope: &EraseScope) -> (Vec<ConversationKey>, u64) {
        let (mut keys, mut snapshots) = (Vec::new(), 0);
        for ((org, agent), conversations) in &mut self.agents {
            conversations.retain(|_, conversation| {
                let key = ConversationKey {
                    org: org.clone(),
                    agent: agent.clone(),
                    conversation: conversation.id.clone(),
                };
                if !scope.covers(&key) {
                    return true;
                }
                snapshots += conversation.snapshots.len() as u64;
                keys.push(key);
                false
            });
        }
        self.agents
            .retain(|_, conversations| !conversations.is_empty());
        self.issued.retain(|key, _| !scope.covers(key));
        (keys, snapshots)
    }

    /// `owned` says whether a conversation has a live owner: those are never pruned whole.
    fn prune(
        &mut self,
        prune: &IdlePrune,
        owned: impl Fn(&ConversationKey) -> bool,
    ) -> PruneReport {
        let mut report = PruneReport::default();
        let (mut conversations_left, mut forensic_left) = (prune.limit, prune.limit);
        for ((org, agent), conversations) in &mut self.agents {
            conversations.retain(|_, conversation| {
                let idle = conversation
                    .head()
                    .is_some_and(|h| prune.takes_conversation(agent, h.written_at));
                let key =
                    || ConversationKey::new(org.clone(), agent.clone(), conversation.id.clone());
                if idle && conversations_left > 0 && !owned(&key()) {
                    conversations_left -= 1;
                    report.conversations += 1;
                    report.snapshots += conversation.snapshots.len() as u64;
                    return prune.dry_run;
                }
                conversation.snapshots.retain(|s| {
                    if forensic_left > 0 && prune.takes_forensic(agent, s.status, s.written_at) {
                        forensic_left -= 1;
                        report.snapshots += 1;
                        return prune.dry_run;
                    }
                    true
                });
                !conversation.snapshots.is_empty()
            });
        }
        self.agents
            .retain(|_, conversations| !conversations.is_empty());
        report
    }
}

fn snapshot_of(stored: &Stored) -> Snapshot {
    Snapshot {
        version: stored.version,
        run: stored.run.clone(),
        transcript: stored.bytes.clone(),
    }
}

#[async_trait]
impl SessionStore for MemoryBackend {
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        let state = self.state()?;
        let head = state.sessions.get(key).and_then(Conversation::head);
        Ok(head.map(snapshot_of))
    }

    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>> {
        let state = self.state()?;
        let head = state.sessions.get(key).and_then(Conversation::head);
        Ok(head.map(|h| h.version))
    }

    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version> {
        self.check_size(key, write.len())?;
        let now = SystemTime::now();
        let mut state = self.state()?;
        let State {
            sessions, leases, ..
        } = &mut *state;
        sessions.persist(key, write, leases.newest_fence(key), now)
    }

    async fn clear(&self, key: &ConversationKey, fence: Fence) -> Result<u64> {
        let mut state = self.state()?;
        let State {
            sessions, leases, ..
        } = &mut *state;
        sessions.clear(key, fence, leases.newest_fence(key))
    }

    async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>> {
        check_page_limit(limit)?;
        Ok(self.state()?.sessions.list(org, agent, cursor, limit))
    }

    async fn prune_with(&self, prune: &IdlePrune) -> Result<PruneReport> {
        prune.validate()?;
        let now = SystemTime::now();
        let mut state = self.state()?;
        let State {
            sessions, leases, ..
        } = &mut *state;
        Ok(sessions.prune(prune, |key| leases.is_owned(key, now)))
    }

    async fn erase(&self, scope: &EraseScope) -> Result<ErasureReport> {
        let mut state = self.state()?;
        let State {
            sessions,
            leases,
            queue,
        } = &mut *state;
        let (mut keys, snapshots) = sessions.erase(scope);
        keys.extend(leases.erase(scope));
        let (run_keys, runs, events) = queue.erase(scope);
        keys.extend(run_keys);
        keys.sort_by_key(ToString::to_string);
        keys.dedup();
        Ok(ErasureReport {
            conversations: keys.len() as u64,
            snapshots,
            runs,
            events,
        })
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<ConversationKey>> {
        check_page_limit(limit)?;
        let after = cursor.map(parse_scan_cursor).transpose()?;
        Ok(self.state()?.sessions.scan(after.as_ref(), limit))
    }

    async fn export(&self, key: &ConversationKey) -> Result<Option<Exported>> {
        Ok(self.state()?.sessions.export(key))
    }

    async fn import(&self, conversation: &Exported) -> Result<Imported> {
        let max_bytes = self.max_transcript_bytes;
        self.state()?.sessions.import(conversation, max_bytes)
    }

    fn max_transcript_bytes(&self) -> usize {
        self.max_transcript_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(run: &RunId, bytes: &'static str, expected: Option<Version>) -> Persist {
        Persist {
            run: run.clone(),
            status: TerminalStatus::Completed,
            transcript: Bytes::from_static(bytes.as_bytes()),
            expected,
            fence: Fence(1),
            base_len: None,
        }
    }

    #[test]
    fn a_chain_of_extending_turns_shares_one_buffer() {
        let mut table = SessionTable::default();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let now = SystemTime::now();
        let fence = Some(Fence(1));
        let (r1, r2, r3) = (RunId::generate(), RunId::generate(), RunId::generate());
        let v1 = table.persist(&key, write(&r1, "a\n", None), fence, now);
        let v2 = table.persist(
            &key,
            write(&r2, "a\nb\n", v1.as_ref().ok().copied()),
            fence,
            now,
        );
        let v3 = table.persist(&key, write(&r3, "a\nb\nc\n", v2.ok()), fence, now);
        assert!(v3.is_ok());
        let snapshots = &table.get(&key).unwrap().snapshots;
        let head = snapshots.last().unwrap().bytes.as_ptr();
        assert!(snapshots.iter().all(|s| s.bytes.as_ptr() == head));
        assert_eq!(&snapshots[0].bytes[..], b"a\n");
        assert_eq!(&snapshots[1].bytes[..], b"a\nb\n");
    }

    #[test]
    fn a_rewritten_transcript_leaves_the_old_chain_intact() {
        let mut table = SessionTable::default();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let now = SystemTime::now();
        let fence = Some(Fence(1));
        let (r1, r2) = (RunId::generate(), RunId::generate());
        let v1 = table
            .persist(&key, write(&r1, "a\nb\n", None), fence, now)
            .unwrap();
        // A compaction rewrites the file: not an extension.
        table
            .persist(&key, write(&r2, "summary\n", Some(v1)), fence, now)
            .unwrap();
        let snapshots = &table.get(&key).unwrap().snapshots;
        assert_eq!(&snapshots[0].bytes[..], b"a\nb\n");
        assert!(!snapshots[0].in_head_chain);
        assert_eq!(&snapshots[1].bytes[..], b"summary\n");
    }
}
