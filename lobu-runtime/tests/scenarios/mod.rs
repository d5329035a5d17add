//! Scenarios every store runs; `tests/runtime.rs` stamps one test per store for each.
#![allow(unreachable_pub)] // a test crate: `pub` only shares scenarios between modules

mod control;
mod events;
mod failures;
mod gateway;
mod multitask;
mod replicas;
mod resets;
mod retention;
mod shutdown;
mod turns;

pub use control::*;
pub use events::*;
pub use failures::*;
pub use gateway::*;
pub use multitask::*;
pub use replicas::*;
pub use resets::*;
pub use retention::*;
pub use shutdown::*;
pub use turns::*;
