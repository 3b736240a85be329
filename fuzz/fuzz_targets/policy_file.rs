//! Feeds arbitrary text to the scale and cost policy loader: it must return policies or errors
//! naming the file, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchwatch::fuzzing::parse_policy_file;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(errors) = parse_policy_file(text)
    {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(e.starts_with("fuzz.yml"), "{e}");
        }
    }
});
