//! The commands beside `serve`, each in its own module, as promtool's and amtool's live in
//! their `cmd/` directories; `main.rs` only parses the command line and calls them.

pub mod check;
pub mod cost_report;
pub mod notify;
pub mod query;
pub mod rules;
pub mod template;
