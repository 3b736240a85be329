//! `torchwatch check config` and `torchwatch check metrics`, as promtool's `check config` and
//! `check metrics`: a config with every file it names, the way `serve` and a reload load them;
//! an exposition the way a scrape parses it, plus promtool's naming lints.

use std::path::Path;

use crate::config::Config;
use crate::scrape::{Format, parse};

/// Loads `path` and everything it refers to (rule files, policy files, notification plan) the way
/// `serve` does; prints what it found or every error. False on any error.
pub fn config(path: &Path) -> bool {
    println!("Checking {}", path.display());
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("  FAILED:\n{e}");
            return false;
        }
    };
    let mut ok = true;
    let mut report = |what: &str, outcome: Result<String, String>| match outcome {
        Ok(found) => println!("  {what}: {found}"),
        Err(e) => {
            ok = false;
            eprintln!("  {what} FAILED:\n{e}");
        }
    };
    report(
        "rules",
        crate::rules::load_all(&config.rules.files).map(|groups| {
            let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
            format!("{} groups, {rules} rules", groups.len())
        }),
    );
    report(
        "policies",
        crate::policy::load_all(&config.policies.files).map(|p| {
            format!(
                "{} scale policies, {} cost policies",
                p.scale.len(),
                p.cost.len()
            )
        }),
    );
    crate::install_tls_provider();
    report(
        "notify",
        reqwest::Client::builder()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|client| crate::notify::Plan::build(&config.notify, &client))
            .map(|_| "routes and receivers valid".into()),
    );
    if ok {
        println!(
            "  SUCCESS: {} models, {} scrape jobs",
            config.models.len(),
            config.scrape.scrape_configs.len()
        );
    }
    ok
}

/// Problems with an exposition in Prometheus' text format: what the scrape parser refuses (then
/// nothing else is checked), and promtool's lints: a family without `# HELP`, a counter whose
/// name lacks `_total`, a name with the type in it. Empty when it is clean.
pub fn metrics(text: &str) -> Vec<String> {
    if let Err(e) = parse(text, Format::Text) {
        return vec![format!("line {}: {}", e.line, e.message)];
    }
    let mut problems = Vec::new();
    let mut helped = std::collections::HashSet::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name), Some(_)) => {
                helped.insert(name.to_string());
            }
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                typed.push((name.to_string(), kind.to_string()))
            }
            _ => {}
        }
    }
    for (name, kind) in &typed {
        if !helped.contains(name) {
            problems.push(format!("{name} no help text"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            problems.push(format!(
                "{name} counter metrics should have \"_total\" suffix"
            ));
        }
        if name.contains(&format!("_{kind}")) && kind != "untyped" {
            problems.push(format!(
                "{name} metric names should not include type '{kind}'"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lints_are_promtools() {
        let clean = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n";
        assert!(metrics(clean).is_empty(), "{:?}", metrics(clean));
        let lints =
            metrics("# TYPE requests counter\nrequests 1\n# TYPE x_gauge gauge\nx_gauge 2\n");
        assert_eq!(
            lints,
            [
                "requests no help text",
                "requests counter metrics should have \"_total\" suffix",
                "x_gauge no help text",
                "x_gauge metric names should not include type 'gauge'",
            ]
        );
        assert_eq!(
            metrics("a 1\nb{x=\"1\" 2\n"),
            ["line 2: expected ',' or '}' at \"2\""]
        );
    }
}
