//! Reading and writing transcripts (lobu/pi session format v3). Filled in by the transcript work.
