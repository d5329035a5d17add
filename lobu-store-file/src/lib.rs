//! lobu on one machine: transcripts, leases and the run queue in plain files. (Work in progress.)
#![deny(missing_docs)]
