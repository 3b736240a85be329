use super::*;
use crate::promql::Sample;
use crate::rules::RuleError;
use crate::storage::Labels;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Answers each query text with a fixed value (absent: no samples; NaN: an error).
struct Fixed(std::sync::Mutex<HashMap<String, f64>>);

impl Fixed {
    fn new(pairs: &[(&str, f64)]) -> Fixed {
        Fixed(std::sync::Mutex::new(
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ))
    }

    fn set(&self, query: &str, v: f64) {
        self.0.lock().unwrap().insert(query.to_string(), v);
    }
}

impl QueryFn for Fixed {
    fn query(&self, _: &Expr, text: &str, _: i64) -> Result<Vec<Sample>, RuleError> {
        match self.0.lock().unwrap().get(text) {
            Some(v) if v.is_nan() => Err(RuleError("connection refused".into())),
            Some(v) => Ok(vec![Sample {
                labels: Labels::default(),
                v: *v,
            }]),
            None => Ok(Vec::new()),
        }
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        // Tests run on several threads: every directory needs its own number.
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "torchwatch-policy-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(text: &str) -> Result<Vec<ScalePolicy>, Vec<String>> {
    let dir = Dir::new("load");
    let path = dir.file("p.yml", text);
    load_file(&path).map_err(|errors| {
        let prefix = format!("{}:", path.display());
        errors
            .into_iter()
            .map(|e| e.replacen(&prefix, "p.yml:", 1))
            .collect()
    })
}

const HPA: &str = "scale_policies:
  - name: cnn
    max_replicas: 4
    metrics:
      - query: sum(rate(torchwatch_requests_total[1m]))
        target: {type: average_value, value: 150}
";

#[test]
fn a_minimal_policy_gets_hpa_defaults() {
    let p = &load(HPA).unwrap()[0];
    assert_eq!((p.min, p.max, p.interval_ms), (1, 4, 15_000));
    assert_eq!(p.algorithm, Algorithm::Hpa);
    assert_eq!(p.hpa.normalization, Normalization::Legacy);
    assert_eq!(p.hpa.tolerance, Tolerance { up: 0.1, down: 0.1 });
    let with_behavior = HPA.replace(
        "    metrics:",
        "    behavior: {scale_down: {stabilization_window: 1m, tolerance: 0.05}}\n    metrics:",
    );
    let p = &load(&with_behavior).unwrap()[0];
    let Normalization::Behavior { up, down } = &p.hpa.normalization else {
        panic!("behavior given")
    };
    assert_eq!(*up, Rules::default_up());
    assert_eq!(down.window_ms, 60_000);
    assert_eq!(down.policies, Rules::default_down().policies);
    assert_eq!(
        p.hpa.tolerance,
        Tolerance {
            up: 0.1,
            down: 0.05
        }
    );
}

#[test]
fn unknown_keys_and_wrong_types_name_the_place_and_the_policy() {
    let err =
        load(&HPA.replace("max_replicas: 4", "max_replicas: 4\n    cooldown: 5m")).unwrap_err();
    assert!(
        err[0].starts_with("p.yml:4:5: scale policy \"cnn\": unknown field `cooldown`"),
        "{err:?}"
    );
    let err = load(&HPA.replace("max_replicas: 4", "max_replicas: many")).unwrap_err();
    assert!(
        err[0].starts_with("p.yml:3:19: scale policy \"cnn\": "),
        "{err:?}"
    );
    let err = load(&HPA.replace("average_value", "per_pod")).unwrap_err();
    assert!(err[0].contains("per_pod"), "{err:?}");
}

#[test]
fn validation_errors_name_the_policy_and_what_to_change() {
    let cases = [
        (
            HPA.replace("sum(rate(", "sum(rate(("),
            "p.yml:5:16: scale policy \"cnn\": metrics[0].query: ",
        ),
        (
            HPA.replace("max_replicas: 4", "max_replicas: 4\n    min_replicas: 5"),
            "min_replicas and max_replicas",
        ),
        (
            HPA.replace("value: 150", "value: 0"),
            "metrics[0].target.value: must be > 0",
        ),
        (
            HPA.replace("max_replicas: 4", "max_replicas: 4\n    algorithm: step"),
            "step policies use step.query",
        ),
        (
            HPA.replace(
                "max_replicas: 4",
                "max_replicas: 4\n    algorithm: predictive",
            ),
            "predictive: give it exactly when",
        ),
        (
            HPA.replace(
                "max_replicas: 4",
                "max_replicas: 4\n    behavior: {scale_up: {policies: []}}",
            ),
            "behavior.scale_up: policies: give at least one",
        ),
        (
            HPA.replace(
                "max_replicas: 4",
                "max_replicas: 4\n    actuator: {model: cnn, command: [true]}",
            ),
            "actuator: give at most one",
        ),
        (
            HPA.replace(
                "max_replicas: 4",
                "max_replicas: 4\n    behavior: {scale_up: {tolerance: .nan}}",
            ),
            "behavior.scale_up.tolerance: must be in [0, 1)",
        ),
        (
            HPA.replace(
                "max_replicas: 4",
                "max_replicas: 4\n    actuator: {command: [kubectl, '--replicas={{ .Count }}']}",
            ),
            "unknown placeholder {{ .Count }}",
        ),
    ];
    for (text, expected) in cases {
        let err = load(&text).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains(expected), "{expected:?} not in {err:?}");
        assert!(err[0].contains("scale policy \"cnn\""), "{err:?}");
    }
}

#[test]
fn names_are_unique_across_files_and_a_model_has_one_policy() {
    let dir = Dir::new("unique");
    let a = dir.file("a.yml", HPA);
    let b = dir.file("b.yml", HPA);
    let err = load_paths(&[a.clone(), b]).unwrap_err();
    assert!(
        err[0].contains("\"cnn\": the name is already used in"),
        "{err:?}"
    );
    let two = format!(
        "{}{}",
        HPA.replace(
            "max_replicas: 4",
            "max_replicas: 4\n    actuator: {model: m}"
        ),
        HPA.replace("scale_policies:\n", "")
            .replace("name: cnn", "name: other")
            .replace(
                "max_replicas: 4",
                "max_replicas: 4\n    actuator: {model: m}"
            )
    );
    let c = dir.file("c.yml", &two);
    let err = load_paths(&[c]).unwrap_err();
    assert!(err[0].contains("both scale model \"m\""), "{err:?}");
    assert!(check_files(&[a]));
}

const STEP: &str = "scale_policies:
  - name: tutorial
    min_replicas: 1
    max_replicas: 10
    algorithm: step
    step:
      query: cpu
      scale_up_threshold: 0.8
      scale_down_threshold: 0.3
";

#[test]
fn step_policy_is_the_tutorials_arithmetic() {
    let p = &load(STEP).unwrap()[0];
    let query = Fixed::new(&[]);
    let mut state = PolicyState::default();
    let mut decide = |v: f64, current: u32| {
        query.set("cpu", v);
        let r = Replicas {
            current,
            ready: current,
        };
        p.decide(&mut state, 0, &query, r).desired_replicas
    };
    // Above 0.8: +2 (capped at max); below 0.3: -1 (floored at min); between: unchanged.
    assert_eq!(decide(0.85, 3), 5);
    assert_eq!(decide(0.85, 9), 10);
    assert_eq!(decide(0.8, 3), 3, "the threshold itself does not scale");
    assert_eq!(decide(0.2, 3), 2);
    assert_eq!(decide(0.2, 1), 1);
    assert_eq!(decide(0.5, 4), 4);
    query.set("cpu", f64::NAN);
    let d = p.decide(
        &mut state,
        0,
        &query,
        Replicas {
            current: 4,
            ready: 4,
        },
    );
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(d.metrics[0].error.as_deref(), Some("connection refused"));
}

#[test]
fn hpa_policy_never_scales_down_when_its_query_fails() {
    let p = &load(HPA).unwrap()[0];
    let q = "sum(rate(torchwatch_requests_total[1m]))";
    let query = Fixed::new(&[(q, 600.0)]);
    let mut state = PolicyState::default();
    let three = Replicas {
        current: 3,
        ready: 3,
    };
    let d = p.decide(&mut state, 0, &query, three);
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(d.reason, "metric 0 above target");
    assert_eq!(d.metrics[0].value, Some(600.0));
    query.set(q, f64::NAN);
    let d = p.decide(&mut state, 600_000, &query, three);
    assert_eq!(d.desired_replicas, 3);
    assert!(
        d.reason.starts_with("no change: invalid metrics"),
        "{}",
        d.reason
    );
}

#[test]
fn predictive_policy_provisions_ahead_of_a_daily_peak() {
    let text = "scale_policies:
  - name: p
    max_replicas: 40
    algorithm: predictive
    behavior: {}
    metrics:
      - query: load
        target: {type: average_value, value: 100}
    predictive: {model: seasonal_naive, season: 1h, history: 3h, resolution: 1m, lead_time: 10m}
";
    let p = &load(text).unwrap()[0];
    let query = Fixed::new(&[]);
    let mut state = PolicyState::default();
    // A load of 100 req/s that jumps to 1,000 for the last 10 minutes of each hour.
    let load = |t: i64| {
        if t % 3_600_000 >= 3_000_000 {
            1000.0
        } else {
            100.0
        }
    };
    let mut replicas = 1;
    let mut before_the_peak = None;
    for step in 0..(2 * 240) {
        let t = step * 15_000;
        query.set("load", load(t));
        let r = Replicas {
            current: replicas,
            ready: replicas,
        };
        let d = p.decide(&mut state, t, &query, r);
        p.carried_out(&mut state, t, replicas, d.desired_replicas);
        replicas = d.desired_replicas;
        // In the second hour, just before the peak: the forecast has seen the first one.
        if t == 3_600_000 + 2_940_000 {
            before_the_peak = Some((d.forecast, replicas));
        }
    }
    let (forecast, replicas) = before_the_peak.unwrap();
    assert_eq!(forecast, Some(1000.0));
    assert_eq!(replicas, 10, "scaled for the peak before it came");
}

#[test]
fn predictive_history_survives_a_restart() {
    let text = "scale_policies:
  - name: p
    max_replicas: 4
    algorithm: predictive
    metrics:
      - query: load
        target: {type: value, value: 100}
    predictive: {model: mean, season: 1m, history: 10m, resolution: 1m}
";
    let p = &load(text).unwrap()[0];
    let dir = Dir::new("history");
    let query = Fixed::new(&[("load", 50.0)]);
    let mut state = PolicyState::default();
    let one = Replicas {
        current: 1,
        ready: 1,
    };
    for t in [0, 60_000, 120_000] {
        p.decide(&mut state, t, &query, one);
    }
    p.save_history(&state, &dir.0).unwrap();
    let mut restored = PolicyState::default();
    p.restore_history(&mut restored, &dir.0);
    assert_eq!(restored.history, state.history);
    assert_eq!(restored.history.as_ref().map(History::len), Some(2));
}
