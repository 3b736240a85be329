//! torchwatch: serves TorchScript models over the KServe V2 protocol and watches them.
//!
//! Data flows one way: [`http`] → [`serve`] (batcher, cache) → [`model`] (LibTorch). [`config`]
//! owns the YAML schemas, [`logs`] the JSON log lines, [`app`] the `serve` lifecycle and
//! [`profile`] the latency profiler, [`cost_report`] the cost report. The binary (`main.rs`) is only the command line.

pub mod app;
pub mod client_error;
pub mod clock;
pub mod cmd;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod gofmt;
pub mod http;
pub mod http_client;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
pub mod profile;
pub mod promql;
pub mod rules;
pub mod scrape;
pub mod serve;
pub mod state;
pub mod storage;
pub mod sync;
pub mod template;
pub mod tensor;
pub mod tls;

/// Installs the process' one TLS crypto provider (ring) for HTTP clients; call
/// it before building any client. Later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
