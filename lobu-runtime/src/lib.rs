//! lobu's lifecycle: the in-process gateway and worker loop. (Work in progress.)
#![deny(missing_docs)]
