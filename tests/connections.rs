//! Connection limits: a client that trickles its headers is cut off at
//! `server.header_read_timeout`, one whose body stops arriving is answered 504 at
//! `server.request_timeout` on every route, and past `server.max_connections` further
//! connections wait to be accepted until one closes, as Prometheus' `--web.max-connections`.

mod common;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; what it sent, if anything.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("the server closes the connection in time")
            .unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&seen).into_owned();
        }
        seen.extend_from_slice(&buffer[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_are_cut_off_and_connections_are_bounded() {
    let server = common::start(
        "connections",
        &[],
        "  header_read_timeout: 1s\n  max_connections: 1",
    );
    let address = server.base.trim_start_matches("http://").to_string();
    // The one connection allowed, held by a client that never finishes its headers.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // A second client is accepted only once the first is gone, and then answered.
    let base = server.base.clone();
    let second = tokio::spawn(async move {
        common::client()
            .get(format!("{base}/v2/health/live"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // It cannot be answered while the slow one holds the only slot (about 1 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past the limit"
    );
    let said = until_closed(&mut slow).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "a slow client got {said:?}"
    );
    assert_eq!(second.await.unwrap().unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_outside_inference_get_504_and_free_their_connection() {
    let server = common::start(
        "stalled-bodies",
        &[],
        "  request_timeout: 1s\n  max_connections: 1",
    );
    let address = server.base.trim_start_matches("http://").to_string();
    // Each body stops after a few of its declared bytes, as a client that stalls mid-upload.
    let stalled = [
        (
            "/api/v1/query",
            "application/x-www-form-urlencoded",
            "query=up",
        ),
        ("/api/v2/alerts", "application/json", "[{\"labels\""),
        ("/api/v2/silences", "application/json", "{\"matchers\""),
    ];
    for (path, content_type, start) in stalled {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
             Content-Length: 1000\r\n\r\n{start}"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server answers and closes: the only connection slot is free again.
        let said = until_closed(&mut stream).await;
        assert!(said.starts_with("HTTP/1.1 504"), "{path}: {said}");
        assert!(
            said.contains("the request body did not arrive within server.request_timeout (1s)"),
            "{path}: {said}"
        );
    }
    let metrics = tokio::time::timeout(Duration::from_secs(30), async {
        common::client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("a connection slot is free after the stalled bodies");
    assert_eq!(
        common::sample(&metrics, "torchwatch_request_body_timeouts_total"),
        Some(3.0),
        "{metrics}"
    );
}
