//! A deadline on reading request bodies outside the inference API (the query API's form posts,
//! posted alerts and silences): hyper bounds only the headers, so without it a client that
//! sends headers and then trickles or stops its body would hold a connection slot and a task
//! for ever. Inference keeps its own deadline, which also covers decoding and the forward pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use super::ApiError;

/// What [`bound_body`] needs: `server.request_timeout` and the counter of bodies given up on.
#[derive(Clone)]
pub struct BodyDeadline {
    pub timeout: Duration,
    pub expired: Counter,
}

/// Gives the handler a body that fails once `server.request_timeout` has passed since the
/// headers arrived, and answers such a request 504 as inference does, whatever the handler's
/// extractor made of the failed read.
pub async fn bound_body(
    State(deadline): State<BodyDeadline>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(Deadlined {
            inner,
            sleep: Box::pin(tokio::time::sleep(deadline.timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    deadline.expired.inc();
    ApiError::request_timeout("the request body did not arrive", deadline.timeout).into_response()
}

struct Deadlined {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // What has arrived is handed over even at the deadline; only waiting is cut short.
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new("request body read timed out"))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
