//! Prometheus' query limits on the query API: `query.timeout` (and a shorter `timeout`
//! parameter), `query.max-samples`, and a runaway query that neither outlives its request nor
//! keeps the process from stopping on SIGTERM within `drain_timeout`.

mod common;

use serde_json::Value;
use std::time::{Duration, Instant};

const RUNAWAY: &str = "sum_over_time(up[1y:1ms])";

async fn query(base: &str, expr: &str, timeout: Option<&str>) -> (u16, Value) {
    let mut params = vec![("query", expr)];
    if let Some(t) = timeout {
        params.push(("timeout", t));
    }
    let response = common::client()
        .post(format!("{base}/api/v1/query"))
        .form(&params)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_stay_within_prometheus_limits_and_never_hold_shutdown() {
    let mut server = common::start(
        "query-limits",
        &[],
        "  drain_timeout: 2s\n  query_max_samples: 20\nscrape:\n  interval: 1s\n",
    );
    // Self-scrapes soon fill the store with more than 20 series; until then the query is
    // answered with what there is.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = query(&server.base, "{__name__=~\".+\"}", None).await;
        if status != 200 {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "never over the limit: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution");
    assert_eq!(
        body["error"],
        "query processing would load too many samples into memory in query execution"
    );
    // Twenty series are within it.
    let (status, body) = query(&server.base, "topk(20, {__name__=~\"up|scrape_.+\"})", None).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = query(&server.base, RUNAWAY, Some("300ms")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorType"], "timeout");
    assert_eq!(body["error"], "query timed out in expression evaluation");

    // A runaway query with the 2m default in flight, then SIGTERM: the process still stops.
    let base = server.base.clone();
    let in_flight = tokio::spawn(async move {
        common::client()
            .post(format!("{base}/api/v1/query"))
            .form(&[("query", RUNAWAY)])
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the runaway query ended on its own"
    );
    server.signal_term();
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    // Its request was answered (canceled) or its connection closed, never left hanging.
    let answered = in_flight.await.unwrap();
    assert!(
        matches!(answered, Ok(499) | Err(_)),
        "the runaway query got {answered:?}"
    );
}
