//! The accept loop: HTTP/1.1 connections with a header read timeout (a client that trickles
//! its headers, slowloris-style, is cut off), at most `max_connections` at once (the rest wait
//! in the kernel's backlog, as Prometheus' `--web.max-connections`), TLS when the web config
//! asks for it (the handshake bounded by the same timeout), and a graceful stop that lets open
//! connections finish their requests.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::web::Web;

/// Connection limits from `server:`.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Go's answer to plain HTTP on a TLS port, so a client that forgot `https://` learns why.
const PLAIN_HTTP_ON_TLS_PORT: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves `app` on `listener` until `stop` turns true, then waits for open connections to
/// finish their requests (the caller bounds that wait by the drain timeout). With TLS in
/// `web`, each connection's handshake uses the configuration in force when it arrives.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    web: Web,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors and the like: wait a moment rather than spin.
            Err(e) => {
                tracing::warn!(event = "accept_failed", error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses are written whole; Nagle's algorithm would only hold back the last segment.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = web.current().tls.clone();
        tokio::spawn(async move {
            // A connection that ends badly (reset, timed out headers, failed handshake)
            // concerns only its client.
            match tls {
                None => {
                    let _ = watcher
                        .watch(builder.serve_connection(TokioIo::new(tcp), service))
                        .await;
                }
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, accept_tls(tcp, tls));
                    if let Ok(Some(stream)) = handshake.await {
                        let _ = watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The TLS handshake, or Go's 400 to a client that speaks plain HTTP; `None` when the
/// connection is not served.
async fn accept_tls(
    mut tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let read = tcp.peek(&mut first).await.ok()?;
    if read == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        let _ = tcp.write_all(PLAIN_HTTP_ON_TLS_PORT).await;
        let _ = tcp.shutdown().await;
        return None;
    }
    match tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::debug!(event = "tls_handshake_failed", error = %e);
            None
        }
    }
}
