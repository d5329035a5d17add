//! Validated identifiers. Every id is checked once, at the edge; past that point the
//! types guarantee the rules, so stores never see an empty, oversized or control-laden id.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest org, run, worker or idempotency id, in bytes.
pub const MAX_ID_BYTES: usize = 255;
/// The longest conversation id, in bytes (platform thread ids can be long).
pub const MAX_CONVERSATION_ID_BYTES: usize = 512;
/// The longest agent id, in bytes (`[A-Za-z0-9_-]{1,64}`, as in lobu).
pub const MAX_AGENT_ID_BYTES: usize = 64;

fn check_text(what: &'static str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(format!("{what} must not be empty")));
    }
    if s.len() > max {
        return Err(Error::invalid(format!(
            "{what} is {} bytes; the limit is {max}",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} must not contain control characters or NUL"
        )));
    }
    Ok(())
}

fn check_agent(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_AGENT_ID_BYTES {
        return Err(Error::invalid(format!(
            "agent id must be 1 to {MAX_AGENT_ID_BYTES} characters of [A-Za-z0-9_-]"
        )));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid("agent id may only contain [A-Za-z0-9_-]"));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validate and wrap `s`; a bad id is an [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error.
            pub fn new(s: impl AsRef<str>) -> Result<Self> {
                let s = s.as_ref();
                let check: fn(&str) -> Result<()> = $check;
                check(s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

string_id!(
    /// A tenant. Every key, row, file and lock includes it; one org never sees another's data.
    OrgId,
    "org id",
    |s| check_text("org id", s, MAX_ID_BYTES)
);
string_id!(
    /// An agent within an org: `[A-Za-z0-9_-]{1,64}` (the same agent id may exist in many orgs).
    AgentId,
    "agent id",
    check_agent
);
string_id!(
    /// A conversation (a chat thread) of one agent: any text up to 512 bytes without control characters.
    ConversationId,
    "conversation id",
    |s| check_text("conversation id", s, MAX_CONVERSATION_ID_BYTES)
);
string_id!(
    /// One run (a turn or a reset) on the run queue. [`RunId::generate`] makes a time-ordered UUIDv7.
    RunId,
    "run id",
    |s| check_text("run id", s, MAX_ID_BYTES)
);
string_id!(
    /// A client-chosen key that makes retried submissions of the same turn harmless.
    IdempotencyKey,
    "idempotency key",
    |s| check_text("idempotency key", s, MAX_ID_BYTES)
);
string_id!(
    /// One worker process or runtime instance; it names who holds a claim.
    WorkerId,
    "worker id",
    |s| check_text("worker id", s, MAX_ID_BYTES)
);

impl RunId {
    /// A fresh, time-ordered run id (UUIDv7).
    pub fn generate() -> Self {
        RunId(Arc::from(uuid::Uuid::now_v7().to_string()))
    }
}

impl WorkerId {
    /// A fresh worker id, `worker-<uuid>` (PIDs collide across hosts; UUIDs do not).
    pub fn generate() -> Self {
        WorkerId(Arc::from(format!("worker-{}", uuid::Uuid::new_v4())))
    }
}

/// The full address of one conversation: org, agent and conversation id.
///
/// Two different keys never map to the same file, row or lock in any backend.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    /// The tenant.
    pub org: OrgId,
    /// The agent.
    pub agent: AgentId,
    /// The conversation.
    pub conversation: ConversationId,
}

impl ConversationKey {
    /// A key from already validated parts.
    pub fn new(org: OrgId, agent: AgentId, conversation: ConversationId) -> Self {
        ConversationKey {
            org,
            agent,
            conversation,
        }
    }

    /// Validate three strings into a key.
    pub fn parse(org: &str, agent: &str, conversation: &str) -> Result<Self> {
        Ok(ConversationKey {
            org: OrgId::new(org)?,
            agent: AgentId::new(agent)?,
            conversation: ConversationId::new(conversation)?,
        })
    }
}

impl fmt::Debug for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConversationKey({:?}/{:?}/{:?})",
            self.org.as_str(),
            self.agent.as_str(),
            self.conversation.as_str()
        )
    }
}

impl fmt::Display for ConversationKey {
    // Quoted with JSON escaping, so the rendering itself cannot be ambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}/{:?}/{:?}",
            self.org.as_str(),
            self.agent.as_str(),
            self.conversation.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn empty_ids_are_invalid_input() {
        assert_eq!(OrgId::new("").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(
            ConversationId::new("").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(RunId::new("").unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn control_characters_and_nul_are_refused() {
        for bad in ["a\0b", "a\nb", "a\rb", "\u{7f}", "x\u{85}y", "tab\there"] {
            assert_eq!(
                ConversationId::new(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
            assert!(OrgId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_limits_are_counted_in_bytes() {
        assert!(OrgId::new("o".repeat(255)).is_ok());
        assert!(OrgId::new("o".repeat(256)).is_err());
        assert!(ConversationId::new("c".repeat(512)).is_ok());
        assert!(ConversationId::new("c".repeat(513)).is_err());
        // 128 two-byte characters are 256 bytes: over the org limit.
        assert!(OrgId::new("é".repeat(128)).is_err());
    }

    #[test]
    fn agent_ids_follow_lobu_rules() {
        assert!(AgentId::new("agent-1_A").is_ok());
        assert!(AgentId::new("a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "a:b", "ü", "../x"] {
            assert_eq!(
                AgentId::new(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
        assert!(AgentId::new("a".repeat(65)).is_err());
    }

    #[test]
    fn conversation_ids_keep_any_printable_text() {
        for ok in [
            "telegram:6570514069",
            "a:b",
            "a_b",
            "x/../y",
            "ü✓😀",
            " spaced ",
        ] {
            assert_eq!(ConversationId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn deserialising_validates() {
        let bad: std::result::Result<OrgId, _> = serde_json::from_str("\"a\\u0000b\"");
        assert!(bad.is_err());
        let good: OrgId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(good.as_str(), "acme");
    }

    #[test]
    fn generated_run_ids_are_valid_and_distinct() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert_ne!(a, b);
        assert!(RunId::new(a.as_str()).is_ok());
    }
}
