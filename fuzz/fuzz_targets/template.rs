//! Parses arbitrary text as a rule template and as a notification template (plain and HTML, with
//! the default definitions) and expands each on fixed data: an expansion or an error, never a
//! panic, a hang, or output past the 4 MiB limit.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use torchwatch::template::{AlertData, Template, TemplateSet, amtool_example};

/// The most one expansion may write (the template module's documented limit).
const MAX_OUTPUT: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    static SET: OnceLock<TemplateSet> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let labels = BTreeMap::from([
        ("alertname".to_string(), "HighLatency".to_string()),
        ("instance".to_string(), "10.0.0.1:8080".to_string()),
    ]);
    let external = BTreeMap::from([("cluster".to_string(), "eu-1".to_string())]);
    let alert = AlertData {
        labels: &labels,
        external_labels: &external,
        external_url: "http://localhost:8080",
        value: 0.25,
    };
    if let Ok(template) = Template::parse(text)
        && let Ok(out) = template.expand(&alert)
    {
        assert!(out.len() <= MAX_OUTPUT);
    }
    let set = SET.get_or_init(TemplateSet::with_defaults);
    let notification = amtool_example(1_700_000_000_000);
    for compiled in [set.compile(text), set.compile_html(text)] {
        if let Ok(template) = compiled
            && let Ok(out) = template.expand_notification(&notification)
        {
            assert!(out.len() <= MAX_OUTPUT);
        }
    }
});
