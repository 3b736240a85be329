//! Feeds arbitrary bytes to both exposition parsers: they must return a
//! result (samples or an error naming a line), never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchwatch::scrape::{Format, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = std::str::from_utf8(data) {
        for format in [Format::Text, Format::OpenMetrics] {
            if let Err(e) = parse(body, format) {
                assert!(e.line >= 1 && e.line <= body.split('\n').count());
            }
        }
    }
});
