//! `torchwatch notify routes test`, as `amtool config routes test`.

use crate::config::Config;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Prints the receivers an alert with `labels` reaches, comma-separated in routing order; with
/// `verify`, fails when they differ from it.
pub fn routes_test(
    config: &Path,
    verify: Option<&str>,
    labels: &[(String, String)],
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    crate::install_tls_provider();
    let client = reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client")?;
    let plan = crate::notify::Plan::build(&config.notify, &client).map_err(anyhow::Error::msg)?;
    let labels =
        crate::storage::Labels::from_pairs(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let receivers = plan.receivers_for(&labels).join(",");
    println!("{receivers}");
    Ok(match verify {
        Some(expected) if expected != receivers => {
            eprintln!("WARNING: expected receivers {expected:?}, got {receivers:?}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}
