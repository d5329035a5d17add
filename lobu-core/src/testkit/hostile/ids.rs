//! Ids that differ only by case, by what a naive sanitiser folds together, by Unicode
//! normalisation or by path syntax are different conversations that never share a byte.

use bytes::Bytes;

use super::{StoreDump, Watched, assert_only_added};
use crate::backend::Backend;
use crate::id::{AgentId, ConversationId, ConversationKey, OrgId};
use crate::lock::Lease;
use crate::session::Version;
use crate::testkit::support::{LONG, fresh_key, turn, unique};

/// Conversation ids a path or key sanitiser would merge, or that mean something to a file
/// system or a URL: every one is a valid id and a conversation of its own.
pub const CONFUSABLE_CONVERSATION_IDS: &[&str] = &[
    "a:b",
    "a_b",
    "a-b",
    "a/b",
    "a\\b",
    "a%2Fb",
    "a%2fb",
    "a%5Cb",
    "a%b",
    "%",
    "%%",
    "%00",
    "100%",
    "100%25",
    ".",
    "..",
    "...",
    "../a",
    "a/..",
    "./a",
    "a/./b",
    "a..b",
    "a.",
    "a ",
    " a",
    "a b",
    "a\u{a0}b",
    "a\u{200b}b",
    "ab",
    "a\u{ff0f}b",
    "a\u{2215}b",
    "Conv",
    "conv",
    "CONV",
    "c\u{f6}nv",
    "co\u{308}nv",
    "\u{212a}elvin",
    "Kelvin",
    "stra\u{df}e",
    "strasse",
    "CON",
    "con",
    "nul",
    "aux.txt",
    "LPT1",
    "~",
    "$HOME",
    "*",
    "?",
    "a|b",
    "\"quoted\"",
    "<tag>",
    "\u{1f600}",
    "\u{202e}gnp.exe",
];

/// Every id of [`CONFUSABLE_CONVERSATION_IDS`], plus the longest ids in several scripts
/// (512 bytes of `é`, of emoji, of ASCII), and org and agent ids that differ only by case or
/// separator, are distinct: each one's lease is free while all the others are held (no
/// shared lock), and its first write only **adds** to the store (no byte that existed for
/// another id changes); each hydrates its own bytes and the listing round-trips every id;
/// clearing them one by one leaves every remaining one's head as it was.
pub async fn confusable_ids_are_distinct_conversations_that_share_nothing(
    backend: &Backend,
    dump: &dyn StoreDump,
) {
    let base = fresh_key();
    let long = [
        "\u{e9}".repeat(256),
        "\u{1f600}".repeat(128),
        "c".repeat(512),
    ];
    let mut conversations: Vec<&str> = CONFUSABLE_CONVERSATION_IDS.to_vec();
    conversations.extend(long.iter().map(String::as_str));
    let mut keys: Vec<ConversationKey> = conversations
        .iter()
        .map(|id| {
            let conversation = ConversationId::new(id).expect("a valid conversation id");
            ConversationKey::new(base.org.clone(), base.agent.clone(), conversation)
        })
        .collect();
    let org = unique("Org");
    for org in [
        org.clone(),
        org.to_lowercase(),
        org.to_uppercase(),
        format!("{org} "),
    ] {
        let org = OrgId::new(org).expect("org id");
        keys.push(ConversationKey::new(
            org,
            base.agent.clone(),
            base.conversation.clone(),
        ));
    }
    for agent in ["Bot", "bot", "BOT", "b-ot", "b_ot"] {
        let agent = AgentId::new(format!("{}{agent}", base.agent)).expect("agent id");
        keys.push(ConversationKey::new(
            base.org.clone(),
            agent,
            base.conversation.clone(),
        ));
    }

    let mut written: Vec<(ConversationKey, Version, Bytes, Lease)> = Vec::new();
    for key in &keys {
        let before = dump.dump().await;
        let lease = backend.locks.try_acquire(key, LONG).await.expect("acquire");
        let lease = lease.unwrap_or_else(|| panic!("{key}: lease busy, it shares a lock"));
        let bytes = Bytes::from(format!(
            "{{\"type\":\"session\",\"id\":{:?}}}\n",
            key.to_string()
        ));
        let version = turn(backend, &lease, None, &bytes).await;
        let after = dump.dump().await;
        assert_only_added(&before, &after, &format!("the first write of {key}"));
        written.push((key.clone(), version, bytes, lease));
    }
    let mut watched = Watched::new(backend, dump);
    for (key, ..) in &written {
        watched.key(key);
    }
    for (key, version, bytes, _) in &written {
        let head = backend.sessions.hydrate(key).await.expect("hydrate");
        let head = head.unwrap_or_else(|| panic!("{key}: no head"));
        assert_eq!((head.version, &head.transcript), (*version, bytes), "{key}");
    }
    let listed = backend
        .sessions
        .list(&base.org, &base.agent, None, 200)
        .await;
    let mut listed: Vec<String> = listed
        .expect("list")
        .items
        .into_iter()
        .map(|s| s.conversation.as_str().to_owned())
        .collect();
    let mut expected: Vec<String> = conversations.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the listing round-trips every id, once each"
    );

    // Clear one at a time: the others keep every byte the API shows.
    for (index, (key, _, _, lease)) in written.iter().enumerate() {
        let mut before = watched.state().await;
        let removed = backend
            .sessions
            .clear(key, lease.fence)
            .await
            .expect("clear");
        assert_eq!(removed, 1, "{key}: its own snapshot, and only it");
        let mut after = watched.state().await;
        for state in [&mut before, &mut after] {
            state.retain(|name, _| {
                name.starts_with("api: head of ")
                    && written[..=index]
                        .iter()
                        .all(|(cleared, ..)| *name != format!("api: head of {cleared}"))
            });
        }
        super::assert_unchanged(&before, &after, &format!("clearing {key}"));
    }
}
