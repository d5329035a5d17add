//! The handlers, one module per resource.

pub(crate) mod conversations;
pub(crate) mod erase;
pub(crate) mod health;
pub(crate) mod messages;
pub(crate) mod runs;
pub(crate) mod session;
