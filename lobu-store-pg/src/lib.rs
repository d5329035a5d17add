//! lobu for many replicas: transcripts, leases and the run queue in PostgreSQL. (Work in progress.)
#![deny(missing_docs)]
