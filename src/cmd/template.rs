//! `torchwatch template render`: a notification template over amtool's example data (with
//! template files, as `amtool template render`), or a rule template over given labels and value.

use crate::template::{AlertData, Template, TemplateSet, amtool_example};
use std::collections::BTreeMap;
use std::path::Path;

/// Renders `text` against Alertmanager's defaults and `globs`; `html` escapes as
/// html/template does.
pub fn render_notification(text: &str, globs: &[String], html: bool) -> anyhow::Result<String> {
    let set = TemplateSet::load(globs, Path::new("."))
        .map_err(|e| anyhow::anyhow!("cannot load the templates: {e}"))?;
    let template = if html {
        set.compile_html(text)
    } else {
        set.compile(text)
    }
    .map_err(|e| anyhow::anyhow!("cannot parse the template: {e}"))?;
    template
        .expand_notification(&amtool_example(crate::clock::now_ms()))
        .map_err(|e| anyhow::anyhow!("cannot expand the template: {e}"))
}

/// Renders a rule annotation template as Prometheus would for one alert.
pub fn render_rule(
    text: &str,
    labels: &BTreeMap<String, String>,
    external_labels: &BTreeMap<String, String>,
    external_url: &str,
    value: f64,
) -> anyhow::Result<String> {
    let template =
        Template::parse(text).map_err(|e| anyhow::anyhow!("cannot parse the template: {e}"))?;
    template
        .expand(&AlertData {
            labels,
            external_labels,
            external_url,
            value,
        })
        .map_err(|e| anyhow::anyhow!("cannot expand the template: {e}"))
}
