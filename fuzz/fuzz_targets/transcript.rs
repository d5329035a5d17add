//! The transcript reader on arbitrary bytes: parse, page through, stats, title.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lobu_core::testkit::fuzz::transcript_reader(data);
});
