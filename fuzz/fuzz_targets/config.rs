//! Feeds arbitrary text to the config loader (`torchwatch.yaml`): it must return a config or an
//! error naming the file, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchwatch::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = Config::parse(text, "fuzz.yaml")
    {
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
