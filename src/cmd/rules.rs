//! `torchwatch rules check|test|export`, promtool's rule commands.

use crate::config;
use crate::rules::{Group, LoadErrors, RuleKind, load_file};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub use crate::rules::run_test_files;

/// The loaded groups as plain Prometheus rules (what `rules export` writes).
fn export(groups: &[Group]) -> config::ExportedFile {
    use crate::config::{ExportedGroup, ExportedRule, PromDuration};
    let duration = |ms: i64| (ms > 0).then(|| PromDuration(ms).to_string());
    config::ExportedFile {
        groups: groups
            .iter()
            .map(|g| ExportedGroup {
                name: g.name.clone(),
                interval: g.interval_ms.and_then(duration),
                limit: (g.limit > 0).then_some(g.limit),
                query_offset: duration(g.query_offset_ms),
                rules: g
                    .rules
                    .iter()
                    .map(|r| match &r.kind {
                        RuleKind::Recording(rec) => ExportedRule {
                            record: Some(rec.name.clone()),
                            alert: None,
                            expr: rec.expr_text.clone(),
                            for_: None,
                            keep_firing_for: None,
                            labels: rec.labels.clone(),
                            annotations: BTreeMap::new(),
                        },
                        RuleKind::Alerting(a) => ExportedRule {
                            record: None,
                            alert: Some(a.name.clone()),
                            expr: a.expr_text.clone(),
                            for_: duration(a.for_ms),
                            keep_firing_for: duration(a.keep_firing_for_ms),
                            labels: a.labels.clone(),
                            annotations: a.annotations.clone(),
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `rules export`: writes each file, compiled to plain Prometheus rules, under
/// `out_dir` with its own file name; false (after printing why) on any problem.
pub fn export_files(paths: &[PathBuf], out_dir: &Path) -> bool {
    let mut names = HashSet::new();
    let mut ok = true;
    for path in paths {
        let Some(name) = path.file_name() else {
            eprintln!("{}: not a file", path.display());
            ok = false;
            continue;
        };
        if !names.insert(name.to_owned()) {
            eprintln!(
                "{}: another input has the same file name; export them separately",
                path.display()
            );
            ok = false;
            continue;
        }
        let groups = match load_file(path) {
            Ok((groups, _)) => groups,
            Err(LoadErrors(errors)) => {
                for e in errors {
                    eprintln!("{e}");
                }
                ok = false;
                continue;
            }
        };
        let target = out_dir.join(name);
        let written = serde_saphyr::to_string(&export(&groups))
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&target, yaml).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("{} -> {}", path.display(), target.display()),
            Err(e) => {
                eprintln!("{}: cannot write: {e}", target.display());
                ok = false;
            }
        }
    }
    ok
}

/// `rules check`: prints promtool's report for each file; false when any file
/// has an error (duplicate rules are reported but, as in promtool, not fatal).
pub fn check_files(paths: &[PathBuf]) -> bool {
    let mut ok = true;
    for path in paths {
        println!("Checking {}", path.display());
        match load_file(path) {
            Ok((groups, duplicates)) if duplicates.is_empty() => {
                let count: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!("  SUCCESS: {count} rules found");
            }
            Ok((_, duplicates)) => {
                // A lint finding, as in promtool: reported as FAILED, yet not fatal.
                eprintln!("  FAILED:");
                eprintln!("lint error {} duplicate rule(s) found.", duplicates.len());
                for d in &duplicates {
                    eprintln!("Metric: {}\nLabel(s):", d.name);
                    for (k, v) in &d.labels {
                        eprintln!("\t{k}: {v}");
                    }
                }
                eprintln!("Might cause inconsistency while recording expressions");
            }
            Err(LoadErrors(errors)) => {
                ok = false;
                eprintln!("  FAILED:");
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
        println!();
    }
    ok
}
