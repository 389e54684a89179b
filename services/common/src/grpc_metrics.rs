//! Metrics of every call an edge server answers, as the outermost layer of
//! the call pipeline ([`crate::grpc::server`]), so calls refused by load
//! shedding or the rate limit are counted too.
//!
//! Names and labels follow the OpenTelemetry RPC semantic conventions
//! (v1.26: `rpc.server.duration`, attributes `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`) in Prometheus form with the `vigil_` prefix:
//! `vigil_rpc_server_duration_seconds{rpc_service,rpc_method}` and
//! `vigil_rpc_server_requests_total{rpc_service,rpc_method,rpc_grpc_status_code}`.
//! The status is read from the response headers (trailers-only answers)
//! or the trailers, when the body ends; a call whose client went away
//! first is `CANCELLED`. Paths the server does not implement are counted
//! as `_OTHER`, so a client cannot create series at will.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramVec, IntCounterVec};

use crate::metrics::{LATENCY_BUCKETS, Metrics, counter_vec, histogram_vec};

/// The counters and histograms of one edge server.
#[derive(Clone)]
pub struct RpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Calls refused before the service saw them, by reason.
    pub refused: IntCounterVec,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcMetrics {
    /// Unregistered; see [`RpcMetrics::register`].
    pub fn new() -> Self {
        Self {
            requests: counter_vec(
                "vigil_rpc_server_requests_total",
                "gRPC calls answered, by service, method and status code.",
                &["rpc_service", "rpc_method", "rpc_grpc_status_code"],
            ),
            duration: histogram_vec(
                "vigil_rpc_server_duration_seconds",
                "Duration of gRPC calls, from the request to the end of the response (a stream's lifetime).",
                &["rpc_service", "rpc_method"],
                LATENCY_BUCKETS,
            ),
            refused: counter_vec(
                "vigil_rpc_server_refused_total",
                "gRPC calls refused before the service saw them, by reason (rate_limited: over the caller's quota; overloaded: the server's in-flight limit).",
                &["reason"],
            ),
        }
    }

    pub fn register(&self, metrics: &Metrics) {
        metrics.register(self.requests.clone());
        metrics.register(self.duration.clone());
        metrics.register(self.refused.clone());
    }
}

/// The tower layer of [`RpcMetrics`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        Self {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// One call being measured; recorded once, when it ends.
struct Call {
    metrics: Arc<RpcMetrics>,
    service: String,
    method: String,
    start: Instant,
    status: Option<tonic::Code>,
    done: bool,
}

impl Call {
    fn finish(&mut self, status: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let (service, method) = if status == tonic::Code::Unimplemented {
            ("_OTHER", "_OTHER")
        } else {
            (self.service.as_str(), self.method.as_str())
        };
        self.metrics
            .duration
            .with_label_values(&[service, method])
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .requests
            .with_label_values(&[service, method, code_name(status)])
            .inc();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body was dropped before its end: the client went away.
        let status = self.status.unwrap_or(tonic::Code::Cancelled);
        self.finish(status);
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from_i32)
}

/// The name the conventions use for a status code (`OK`, `NOT_FOUND`...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = {
            let mut parts = request.uri().path().trim_start_matches('/').splitn(2, '/');
            (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        };
        let mut call = Call {
            metrics: self.metrics.clone(),
            service,
            method,
            start: Instant::now(),
            status: None,
            done: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    // A trailers-only answer (an error before any message)
                    // carries its status in the headers.
                    call.status = status_of(response.headers());
                    Ok(response.map(|inner| MeteredBody { inner, call }))
                }
                Err(error) => {
                    // Refused by a layer below (load shedding): tonic
                    // answers RESOURCE_EXHAUSTED (or UNKNOWN).
                    call.finish(tonic::Code::ResourceExhausted);
                    Err(error)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Call,
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(status_of) {
                    this.call.status = Some(status);
                    this.call.finish(status);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(tonic::Code::Internal),
            Poll::Ready(None) => {
                let status = this.call.status.unwrap_or(tonic::Code::Ok);
                this.call.finish(status);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
