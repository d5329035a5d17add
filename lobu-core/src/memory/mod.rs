//! The in-memory reference backend. Filled in by the memory/testkit work.
