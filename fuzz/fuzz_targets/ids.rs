//! Every id parser on arbitrary bytes, and the three parts of a conversation key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lobu_core::testkit::fuzz::id_parsers(data);
});
