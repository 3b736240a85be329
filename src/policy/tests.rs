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
    load_both(text).map(|p| p.scale)
}

fn load_both(text: &str) -> Result<Policies, Vec<String>> {
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

mod cost_policies {
    use super::*;
    use crate::policy::cost::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    const OPENCOST: Prices = Prices {
        cpu_core_hour: 0.031611,
        memory_gib_hour: 0.004237,
        gpu_hour: 0.95,
    };

    #[test]
    fn opencost_arithmetic_on_a_hand_computed_box() {
        let allocated = Resources {
            cpu_cores: 4.0,
            memory_bytes: 16.0 * GIB,
            gpus: 1.0,
        };
        let used = Resources {
            cpu_cores: 1.0,
            memory_bytes: 6.0 * GIB,
            gpus: 0.5,
        };
        let c = opencost(allocated, used, OPENCOST);
        // 4 x 0.031611, 16 x 0.004237, 1 x 0.95
        assert!(close(c.hourly.cpu, 0.126444), "{c:?}");
        assert!(close(c.hourly.memory, 0.067792), "{c:?}");
        assert!(close(c.hourly.gpu, 0.95), "{c:?}");
        assert!(close(c.hourly.total, 1.144236), "{c:?}");
        // 3 x 0.031611, 10 x 0.004237, 0.5 x 0.95
        assert!(close(c.idle_hourly.cpu, 0.094833), "{c:?}");
        assert!(close(c.idle_hourly.memory, 0.04237), "{c:?}");
        assert!(close(c.idle_hourly.total, 0.612203), "{c:?}");
        assert!(close(c.idle_share, 0.612203 / 1.144236), "{c:?}");
        assert!(close(c.efficiency.cpu, 0.25) && close(c.efficiency.memory, 0.375));
        // (0.126444 x 0.25 + 0.067792 x 0.375 + 0.95 x 0.5) / 1.144236
        assert!(close(c.efficiency.total, 0.532033 / 1.144236), "{c:?}");
    }

    #[test]
    fn use_above_the_allocation_costs_what_is_used_and_nothing_idles() {
        let allocated = Resources {
            cpu_cores: 2.0,
            memory_bytes: GIB,
            gpus: 0.0,
        };
        let used = Resources {
            cpu_cores: 3.0,
            memory_bytes: GIB,
            gpus: 0.0,
        };
        let c = opencost(allocated, used, OPENCOST);
        assert!(close(c.hourly.cpu, 3.0 * 0.031611));
        assert_eq!(c.idle_hourly.cpu, 0.0);
        assert!(close(c.efficiency.cpu, 1.5));
        assert_eq!(c.hourly.gpu, 0.0);
        // OpenCost: nothing requested and nothing used is 0, used without a request is 1.
        assert_eq!(c.efficiency.gpu, 0.0);
        let c = opencost(
            Resources::default(),
            Resources {
                cpu_cores: 1.0,
                ..Default::default()
            },
            OPENCOST,
        );
        assert_eq!(c.efficiency.cpu, 1.0);
        let nothing = opencost(Resources::default(), Resources::default(), OPENCOST);
        assert_eq!((nothing.idle_share, nothing.efficiency.total), (0.0, 0.0));
    }

    #[test]
    fn savings_are_the_tutorials_calculate_cost_savings() {
        // The tutorial's prices: cpu x 0.05 + memory_gb x 0.01 + gpu x 0.5 per hour.
        let tutorial = Prices {
            cpu_core_hour: 0.05,
            memory_gib_hour: 0.01,
            gpu_hour: 0.5,
        };
        let current = Resources {
            cpu_cores: 4.0,
            memory_bytes: 8.0 * GIB,
            gpus: 1.0,
        };
        let optimized = Resources {
            cpu_cores: 2.0,
            memory_bytes: 4.0 * GIB,
            gpus: 1.0,
        };
        assert!(close(allocation_cost(current, tutorial), 0.78));
        let (saved, percent) = savings(current, optimized, tutorial);
        assert!(close(saved, 0.14), "{saved}");
        assert!(close(percent, 0.14 / 0.78 * 100.0), "{percent}");
        assert_eq!(savings(Resources::default(), optimized, tutorial).1, 0.0);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        // numpy.percentile([1, 2, 3, 4, 5], 95) == 4.8
        assert!(close(percentile(&v, 0.95).unwrap(), 4.8));
        assert_eq!(percentile(&v, 1.0), Some(5.0));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[], 0.9), None);
    }

    fn sizing() -> RightSizing {
        RightSizing {
            window_ms: 100_000,
            resolution_ms: 1_000,
            cpu_percentile: 0.95,
            memory_percentile: None,
            margin: 0.15,
            downscale_below: 0.3,
            upscale_above: 0.9,
            min_points: 3,
            min_cpu_cores: 0.025,
            min_memory_bytes: 250.0 * 1024.0 * 1024.0,
        }
    }

    #[test]
    fn the_tutorials_thresholds_are_strict() {
        let rs = sizing();
        assert_eq!(Advice::of(0.29, &rs), Advice::Downscale);
        assert_eq!(Advice::of(0.3, &rs), Advice::Keep);
        assert_eq!(Advice::of(0.9, &rs), Advice::Keep);
        assert_eq!(Advice::of(0.91, &rs), Advice::Upscale);
    }

    const BOX: &str = "cost_policies:
  - name: box
    interval: 1s
    prices: {cpu_core_hour: 0.05, memory_gib_hour: 0.01, gpu_hour: 0.5}
    allocated:
      cpu_cores: 4
      memory_bytes: 8589934592
    used:
      cpu_cores: cpu
      memory_bytes: memory
    inferences: rate
    right_sizing: {window: 1m, resolution: 1s, min_points: 5}
";

    #[test]
    fn evaluation_reads_prices_queries_and_numbers_and_right_sizes_over_the_history() {
        let policies = load_both(BOX).unwrap();
        let p = &policies.cost[0];
        let query = Fixed::new(&[("cpu", 0.5), ("memory", 1.0 * GIB), ("rate", 20.0)]);
        let mut state = CostState::default();
        // One point per second; CPU 0.5..1.3 cores, memory peaking at 2 GiB.
        let cpu = [0.5, 0.7, 0.9, 1.1, 1.3, 0.5];
        let memory = [1.0, 1.5, 2.0, 1.0, 1.0, 1.0];
        let mut last = None;
        for (i, (c, m)) in cpu.iter().zip(memory).enumerate() {
            query.set("cpu", *c);
            query.set("memory", m * GIB);
            last = Some(p.evaluate(&mut state, i as i64 * 1000, &query).unwrap());
        }
        let report = last.unwrap();
        // max(4, 0.5) x 0.05 + max(8, 1) x 0.01, no GPU.
        assert!(close(report.costs.hourly.total, 0.28), "{report:?}");
        // 0.28 per hour over 20 x 3600 inferences, per 1,000.
        assert!(close(report.cost_per_1k_inferences.unwrap(), 0.28 / 72.0));
        let r = report.right_sizing.expect("five closed steps");
        assert_eq!(r.points, 5);
        // p95 of [0.5, 0.7, 0.9, 1.1, 1.3] is 1.26; + 15 %.
        assert!(close(r.recommended.cpu_cores, 1.26 * 1.15), "{r:?}");
        assert!(close(r.recommended.memory_bytes, 2.0 * GIB * 1.15), "{r:?}");
        // Mean use 0.9 of 4 cores and 1.3 of 8 GiB: both below 30 %.
        assert_eq!(r.cpu.advice, Advice::Downscale);
        assert!(close(r.cpu.mean_utilisation, 0.9 / 4.0));
        assert_eq!(r.memory.advice, Advice::Downscale);
        assert!(r.gpu.is_none(), "no GPU allocated");
        let idle = Fixed::new(&[("cpu", 0.001), ("memory", 1e6), ("rate", 1.0)]);
        let mut quiet = CostState::default();
        let floor = (0..6)
            .map(|t| p.evaluate(&mut quiet, t * 1000, &idle).unwrap())
            .last()
            .and_then(|r| r.right_sizing)
            .unwrap();
        assert_eq!(floor.recommended.cpu_cores, 0.025, "VPA's minimum");
        assert_eq!(floor.recommended.memory_bytes, 250.0 * 1024.0 * 1024.0);
        let saved = (4.0 - 1.26 * 1.15) * 0.05 + (8.0 - 2.3) * 0.01;
        assert!(close(r.savings_hourly, saved), "{r:?}");
        assert!(close(r.savings_percent, saved / 0.28 * 100.0), "{r:?}");
    }

    #[test]
    fn a_failed_query_names_its_field_and_missing_inferences_only_drop_their_figure() {
        let policies = load_both(BOX).unwrap();
        let p = &policies.cost[0];
        let mut state = CostState::default();
        let no_memory = Fixed::new(&[("cpu", 0.5), ("rate", 1.0)]);
        let err = p.evaluate(&mut state, 0, &no_memory).unwrap_err();
        assert_eq!(
            err.0, "used.memory_bytes: the query returned no samples",
            "{err:?}"
        );
        let negative = Fixed::new(&[("cpu", -0.5), ("memory", GIB), ("rate", 1.0)]);
        let err = p.evaluate(&mut state, 0, &negative).unwrap_err();
        assert_eq!(
            err.0,
            "used.cpu_cores: the query returned -0.5; need a finite number >= 0"
        );
        let idle = Fixed::new(&[("cpu", 0.5), ("memory", GIB), ("rate", 0.0)]);
        let report = p.evaluate(&mut state, 1000, &idle).unwrap();
        assert_eq!(
            report.cost_per_1k_inferences, None,
            "no inferences, no ratio"
        );
        assert!(report.right_sizing_pending.unwrap().contains("min_points"));
    }

    #[test]
    fn the_issues_example_loads_and_bad_fields_are_located() {
        let example = "cost_policies:
  - name: box
    interval: 1m
    prices: {cpu_core_hour: 0.031611, memory_gib_hour: 0.004237, gpu_hour: 0.95}
    allocated:
      cpu_cores: torchwatch_machine_cpu_cores
      memory_bytes: torchwatch_machine_memory_bytes
      gpus: count(torchwatch_gpu_memory_total_bytes) or vector(0)
    used:
      cpu_cores: rate(process_cpu_seconds_total{job=\"torchwatch\"}[5m])
      memory_bytes: process_resident_memory_bytes{job=\"torchwatch\"}
      gpus: avg(torchwatch_gpu_utilization_ratio) or vector(0)
    inferences: sum(rate(torchwatch_inference_count_total[5m]))
    right_sizing: {window: 7d, cpu_percentile: 0.95, memory: max, margin: 0.15, downscale_below: 0.3, upscale_above: 0.9}
";
        let loaded = load_both(example).unwrap();
        let p = &loaded.cost[0];
        assert_eq!(p.prices, OPENCOST);
        assert_eq!(p.right_sizing.window_ms, 7 * 86_400_000);
        assert_eq!(p.right_sizing.memory_percentile, None);
        let defaults = load_both(
            "cost_policies:
  - name: d
    allocated: {cpu_cores: 2, memory_bytes: 1e9}
    used: {cpu_cores: 1, memory_bytes: 1e8}
    right_sizing: {memory: 0.9}
",
        )
        .unwrap();
        let d = &defaults.cost[0];
        assert_eq!(d.prices, OPENCOST, "OpenCost's defaults");
        assert_eq!(d.interval_ms, 60_000);
        assert_eq!(d.right_sizing.memory_percentile, Some(0.9));
        for (text, expected) in [
            (
                BOX.replace("min_points: 5", "min_points: 5, cpu_percentile: 95"),
                "p.yml:2:5: cost policy \"box\": right_sizing.cpu_percentile: must be in (0, 1]",
            ),
            (
                BOX.replace("cpu_cores: cpu", "cpu_cores: rate(x[5m]"),
                "p.yml:9:18: cost policy \"box\": used.cpu_cores:",
            ),
            (
                BOX.replace("inferences: rate", "inference: rate"),
                "cost policy \"box\": unknown field `inference`",
            ),
            (
                BOX.replace("memory_bytes: memory", "memory_bytes: -1"),
                "p.yml:10:21: cost policy \"box\": used.memory_bytes: must be a number >= 0",
            ),
            (
                BOX.replace("min_points: 5", "min_points: 5, memory: peak"),
                "p.yml:2:5: cost policy \"box\": right_sizing.memory: must be max or a percentile in (0, 1]",
            ),
            (
                BOX.replace("min_points: 5", "min_points: 61"),
                "right_sizing.min_points: must be between 1 and window / resolution (60)",
            ),
            (
                BOX.replace(
                    "memory_bytes: 8589934592",
                    "memory_bytes: 8589934592\n      gpus: 1",
                ),
                "allocated.gpus and used.gpus: give both or neither",
            ),
        ] {
            let err = load_both(&text).unwrap_err();
            assert_eq!(err.len(), 1, "{err:?}");
            assert!(err[0].contains(expected), "{expected:?} not in {err:?}");
        }
        let dir = Dir::new("cost-twice");
        let twice = format!("{BOX}{}", BOX.replace("cost_policies:\n", ""));
        let err = load_paths(&[dir.file("p.yml", &twice)]).unwrap_err();
        assert!(
            err[0].contains("cost policy \"box\": the name is already used"),
            "{err:?}"
        );
    }

    #[test]
    fn the_usage_history_survives_a_restart() {
        let policies = load_both(BOX).unwrap();
        let p = &policies.cost[0];
        let dir = Dir::new("cost-history");
        let query = Fixed::new(&[("cpu", 0.5), ("memory", GIB), ("rate", 1.0)]);
        let mut state = CostState::default();
        for t in 0..4 {
            p.evaluate(&mut state, t * 1000, &query).unwrap();
        }
        p.save_history(&state, &dir.0).unwrap();
        let mut restored = CostState::default();
        p.restore_history(&mut restored, &dir.0);
        let report = p.evaluate(&mut restored, 4000, &query).unwrap();
        // 3 steps restored + the one this evaluation closed.
        assert_eq!(
            report.right_sizing_pending.as_deref(),
            Some("4 of the 5 history points it needs (right_sizing.min_points)")
        );
    }
}
