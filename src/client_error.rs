//! Outgoing HTTP failures in words: the kind alone (no URL) where the URL is a secret, such as a
//! webhook's, and the whole chain of causes where it is not, such as a scrape target's.

/// What kind of failure a client error is: `timeout`, `connection failed` or `request failed`.
pub fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// The kind, the error and each of its causes (the URL included).
pub fn describe(e: &reqwest::Error) -> String {
    let mut message = format!("{}: {e}", kind(e));
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}
