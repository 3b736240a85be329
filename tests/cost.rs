//! Cost policies in `serve`: under a known load, the exported `torchwatch_cost_*` figures are
//! OpenCost's arithmetic over the very samples the policy read, recomputed here from the query
//! API at the evaluation's timestamp; `/api/v1/cost` and `torchwatch cost report` show the same.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Api, ModelEntry, infer_body, references, sample};
use serde_json::Value;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const CPU: &str = r#"rate(process_cpu_seconds_total{job="torchwatch"}[10s])"#;
const MEMORY: &str = r#"process_resident_memory_bytes{job="torchwatch"}"#;
const INFERENCES: &str = r#"sum(rate(torchwatch_inference_count_total{job="torchwatch"}[10s]))"#;
const PRICES: (f64, f64, f64) = (0.04, 0.005, 1.2);
const ALLOCATED: (f64, f64, f64) = (2.0, 4.0 * GIB, 1.0);
const USED_GPUS: f64 = 0.25;

fn policy_file() -> String {
    format!(
        "cost_policies:
  - name: box
    interval: 1300ms
    prices: {{cpu_core_hour: {}, memory_gib_hour: {}, gpu_hour: {}}}
    allocated: {{cpu_cores: {}, memory_bytes: {}, gpus: {}}}
    used:
      cpu_cores: '{CPU}'
      memory_bytes: '{MEMORY}'
      gpus: {USED_GPUS}
    inferences: '{INFERENCES}'
    right_sizing: {{window: 1m, resolution: 1s, min_points: 3}}
",
        PRICES.0, PRICES.1, PRICES.2, ALLOCATED.0, ALLOCATED.1, ALLOCATED.2
    )
}

/// The instant value of `query` at `time` (Unix seconds) through the query API.
async fn value_at(api: &Api, query: &str, time: f64) -> f64 {
    let time = format!("{time:.3}");
    let (status, body) = api
        .get("/api/v1/query", &[("query", query), ("time", &time)])
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{query} at {time}: {body}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[tokio::test]
async fn cost_metrics_match_a_hand_computation_from_the_scraped_samples() {
    let dir = common::TempDir::new("cost");
    let file = dir.path().join("cost.yml");
    std::fs::write(&file, policy_file()).unwrap();
    let server = common::start(
        "cost",
        &[ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  interval: 1s\npolicies:\n  files: ['{}']\n",
            file.display()
        ),
    );
    server.wait_ready().await;
    let api = Api::new(&server);

    // A known load: 4 rows per request, about 25 requests per second, until the end of the test.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (sent, stop, url) = (
            sent.clone(),
            stop.clone(),
            server.url("/v2/models/mlp/infer"),
        );
        let case = &references("mlp")[1];
        let body = infer_body(&case.shape, &case.input);
        let rows = case.shape[0] as u64;
        tokio::spawn(async move {
            let client = common::client();
            while !stop.load(Ordering::Relaxed) {
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                sent.fetch_add(rows, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let started = Instant::now();
    let load_began_s = common::now_s();
    // Wait for an evaluation whose 10 s rate() window lies wholly under the load.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = api.metrics_text().await;
        let evaluated = sample(
            &text,
            r#"torchwatch_cost_last_evaluation_timestamp_seconds{policy="box"}"#,
        );
        if evaluated.is_some_and(|t| t >= load_began_s + 10.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cost policy never evaluated under load"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The figures of one evaluation, with its timestamp, and the same queries re-run at that
    // timestamp. A scrape in flight during the evaluation (stamped before it, appended after)
    // changes an input on re-run, so the policy's interval is out of step with the scrapes and
    // a few evaluations may be tried; the arithmetic is checked on one whose inputs match.
    let mut checked = false;
    for _ in 0..40 {
        let text = api.metrics_text().await;
        let at = |series: &str| {
            sample(&text, &format!("{series}{{policy=\"box\"}}"))
                .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        };
        let time = at("torchwatch_cost_last_evaluation_timestamp_seconds");
        let used_cpu = value_at(&api, CPU, time).await;
        let used_memory = value_at(&api, MEMORY, time).await;
        let inferences = value_at(&api, INFERENCES, time).await;
        if !(close(at("torchwatch_cost_used_cpu_cores"), used_cpu)
            && close(at("torchwatch_cost_used_memory_bytes"), used_memory))
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        // OpenCost by hand: max(allocated, used) x price per resource.
        let (cpu_price, memory_price, gpu_price) = PRICES;
        let cpu = ALLOCATED.0.max(used_cpu) * cpu_price;
        let memory = (ALLOCATED.1 / GIB).max(used_memory / GIB) * memory_price;
        let gpu = ALLOCATED.2.max(USED_GPUS) * gpu_price;
        let total = cpu + memory + gpu;
        let idle = (ALLOCATED.0 - used_cpu).max(0.0) * cpu_price
            + ((ALLOCATED.1 - used_memory) / GIB).max(0.0) * memory_price
            + (ALLOCATED.2 - USED_GPUS) * gpu_price;
        let efficiency = (cpu * used_cpu / ALLOCATED.0
            + memory * used_memory / ALLOCATED.1
            + gpu * USED_GPUS / ALLOCATED.2)
            / total;
        let per_1k = total / (inferences * 3600.0) * 1000.0;
        let resource = |r: &str| {
            sample(
                &text,
                &format!("torchwatch_cost_resource_hourly{{policy=\"box\",resource=\"{r}\"}}"),
            )
            .unwrap()
        };
        assert!(
            close(resource("cpu"), cpu),
            "cpu {} vs {cpu}",
            resource("cpu")
        );
        assert!(close(resource("memory"), memory));
        assert!(close(resource("gpu"), gpu));
        assert!(
            close(at("torchwatch_cost_hourly"), total),
            "{total}\n{text}"
        );
        assert!(close(at("torchwatch_cost_idle_ratio"), idle / total));
        assert!(close(
            at("torchwatch_cost_total_efficiency_ratio"),
            efficiency
        ));
        let exported_per_1k = at("torchwatch_cost_per_1k_inferences");
        assert!(
            close(exported_per_1k, per_1k),
            "{exported_per_1k} vs {per_1k}"
        );
        assert!(close(
            at("torchwatch_cost_allocated_memory_bytes"),
            ALLOCATED.1
        ));
        assert_eq!(at("torchwatch_cost_used_gpus"), USED_GPUS);
        // The load is known: about 100 rows per second, and the policy saw it.
        let offered = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        assert!(
            inferences > offered * 0.5 && inferences < offered * 1.5,
            "{inferences} inferences/s measured, {offered} offered"
        );
        checked = true;
        break;
    }
    assert!(
        checked,
        "no evaluation's inputs matched a re-run of its queries"
    );
    // The light load leaves CPU idle: the advice says so, and the recommendation is smaller.
    let text = api.metrics_text().await;
    let recommended = sample(
        &text,
        r#"torchwatch_cost_recommended_cpu_cores{policy="box"}"#,
    )
    .unwrap();
    assert!(
        recommended > 0.0 && recommended < ALLOCATED.0,
        "{recommended}"
    );
    assert!(sample(&text, r#"torchwatch_cost_savings_hourly{policy="box"}"#).unwrap() > 0.0);

    let (status, body) = api.get("/api/v1/cost", &[]).await;
    assert_eq!(status, 200);
    let policy = &body["data"]["policies"][0];
    assert_eq!(policy["name"], "box");
    let sizing = &policy["last"]["right_sizing"];
    assert_eq!(sizing["cpu"]["advice"], "downscale", "{policy}");
    assert_eq!(sizing["memory"]["advice"], "downscale", "{policy}");
    assert!(sizing["points"].as_u64().unwrap() >= 3, "{policy}");

    // The report reads the same endpoint.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["cost", "report", "--url", &server.base])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{table}");
    assert!(table.contains("cost policy box"), "{table}");
    assert!(table.contains("downscale (mean use"), "{table}");
    assert!(table.contains("right-sizing over"), "{table}");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["cost", "report", "--url", &server.base, "--json"])
        .output()
        .unwrap();
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["policies"][0]["name"], "box");
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["cost", "report", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("is torchwatch serving there?"),
        "{unreachable:?}"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}
