//! The conformance suite. Filled in by the memory/testkit work.
