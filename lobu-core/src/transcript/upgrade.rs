//! Bringing a pi session file of any version to version 3, the way pi migrates one on load
//! (`migrateToCurrentVersion` in pi's `session-manager.ts`):
//!
//! * version 1 → 2: every entry gets an `id` and a `parentId` (the entry before it: version
//!   1 was a straight line); a compaction's `firstKeptEntryIndex` becomes the
//!   `firstKeptEntryId` of the entry at that index;
//! * version 2 → 3: a message whose role is `hookMessage` gets the role `custom`;
//! * the header's `version` becomes 3.
//!
//! Like pi, blank and malformed lines are dropped (and counted), keys keep their order and
//! values their bytes (only what the migration changes is re-written). Unlike pi, whose ids
//! are random, an id is derived from the session id and the entry's position, so upgrading
//! the same file twice gives the same bytes (an import run twice finds its own head). A
//! file already at version 3 or later is returned as it is, byte for byte.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::transcript::hash;

use super::SESSION_VERSION;

type Object = IndexMap<String, Box<RawValue>>;

/// A session file at the current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The version-3 bytes.
    pub bytes: Vec<u8>,
    /// The version the file declared (1 when its header has none).
    pub from_version: u64,
    /// Blank or malformed lines dropped by the migration (always 0 for a file already
    /// current, which is kept byte for byte).
    pub dropped_lines: usize,
}

/// Upgrade a pi session file to version 3. `InvalidInput` when the first line is not a pi
/// `session` header with a string `id` (pi refuses such a file too).
pub fn upgrade(bytes: &[u8]) -> Result<Upgraded> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid("a pi session file is UTF-8 text").with_source(e))?;
    let mut dropped_lines = 0;
    let mut entries: Vec<Object> = Vec::new();
    for line in text.trim().split('\n') {
        if line.trim().is_empty() {
            dropped_lines += 1;
            continue;
        }
        match serde_json::from_str::<Object>(line) {
            Ok(entry) => entries.push(entry),
            Err(_) => dropped_lines += 1,
        }
    }
    let header = entries
        .first()
        .ok_or_else(|| not_a_session("it is empty"))?;
    if string(header, "type").as_deref() != Some("session") {
        return Err(not_a_session("its first entry is not a `session` header"));
    }
    let session_id = string(header, "id").ok_or_else(|| not_a_session("its header has no id"))?;
    let from_version = header
        .get("version")
        .and_then(|v| serde_json::from_str::<u64>(v.get()).ok())
        .unwrap_or(1);
    if from_version >= SESSION_VERSION {
        return Ok(Upgraded {
            bytes: bytes.to_vec(),
            from_version,
            dropped_lines: 0,
        });
    }
    if from_version < 2 {
        v1_to_v2(&mut entries, &session_id)?;
    }
    v2_to_v3(&mut entries)?;
    let mut out = Vec::with_capacity(bytes.len() + entries.len() * 40);
    for entry in &entries {
        serde_json::to_writer(&mut out, entry).map_err(internal)?;
        out.push(b'\n');
    }
    Ok(Upgraded {
        bytes: out,
        from_version,
        dropped_lines,
    })
}

fn v1_to_v2(entries: &mut [Object], session_id: &str) -> Result<()> {
    let mut ids = HashSet::new();
    let mut previous: Option<String> = None;
    for index in 0..entries.len() {
        if is_session(&entries[index]) {
            entries[index].insert("version".into(), raw(&2)?);
            continue;
        }
        let id = entry_id(session_id, index, &mut ids);
        let entry = &mut entries[index];
        entry.insert("id".into(), raw(&id)?);
        entry.insert("parentId".into(), raw(&previous)?);
        previous = Some(id);
        if string(entry, "type").as_deref() != Some("compaction") {
            continue;
        }
        let Some(kept) = entry
            .get("firstKeptEntryIndex")
            .and_then(|v| serde_json::from_str::<f64>(v.get()).ok())
        else {
            continue;
        };
        // pi indexes the whole file (header included) and takes the id already given.
        let target = (kept >= 0.0 && kept.fract() == 0.0)
            .then(|| entries.get(kept as usize))
            .flatten()
            .filter(|t| !is_session(t))
            .and_then(|t| t.get("id").cloned());
        let entry = &mut entries[index];
        if let Some(target) = target {
            entry.insert("firstKeptEntryId".into(), target);
        }
        entry.shift_remove("firstKeptEntryIndex");
    }
    Ok(())
}

fn v2_to_v3(entries: &mut [Object]) -> Result<()> {
    for entry in entries {
        if is_session(entry) {
            entry.insert("version".into(), raw(&SESSION_VERSION)?);
            continue;
        }
        if string(entry, "type").as_deref() != Some("message") {
            continue;
        }
        let Some(message) = entry.get("message") else {
            continue;
        };
        let Ok(mut message) = serde_json::from_str::<Object>(message.get()) else {
            continue;
        };
        if string(&message, "role").as_deref() == Some("hookMessage") {
            message.insert("role".into(), raw(&"custom")?);
            let message = serde_json::value::to_raw_value(&message).map_err(internal)?;
            entry.insert("message".into(), message);
        }
    }
    Ok(())
}

/// An 8-hex-digit id like pi's, derived from the session id and the entry's position, and
/// never one already given in this file.
fn entry_id(session_id: &str, index: usize, given: &mut HashSet<String>) -> String {
    for salt in 0u32.. {
        let seed = format!("{session_id}\n{index}\n{salt}");
        let id = hash::hex(&hash::digest(seed.as_bytes())[..4]);
        if given.insert(id.clone()) {
            return id;
        }
    }
    unreachable!("some salt gives an unused id")
}

fn is_session(entry: &Object) -> bool {
    string(entry, "type").as_deref() == Some("session")
}

fn string(entry: &Object, field: &str) -> Option<String> {
    entry
        .get(field)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

fn raw(value: &impl serde::Serialize) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(internal)
}

fn internal(e: serde_json::Error) -> Error {
    Error::invalid("a migrated entry does not serialise").with_source(e)
}

fn not_a_session(why: &str) -> Error {
    Error::invalid(format!("not a pi session file: {why}"))
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
