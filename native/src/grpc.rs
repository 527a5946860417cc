//! `GrpcServer`: the OTLP/gRPC receiver's transport (HTTP/2 and gRPC framing) in Rust.
//!
//! A Python gRPC server spends ~0.85 ms of CPU per 58 KB request before any of our code runs
//! (its completion-queue thread hands each call to a thread pool, both holding the GIL); this
//! one reads the request on a tokio thread without the GIL and calls the Python handler once
//! per request with the message bytes. What the request means (auth, decoding, the answer) stays
//! in Python: `pipeline.receivers.otlp_grpc`, which falls back to grpcio without this module
//! and for TLS.
//!
//! The handler: `handler(path, message, compressed, authorization, refused) -> (status,
//! message, body, trailers)`; `message` is None when the transport refused the request, and
//! `refused` says why: "too_large" (over `max_message_bytes`) or "receiver_busy" (the bytes
//! of the requests in flight would exceed `max_inflight_bytes`); `status` 0 answers `body` as
//! the response message, anything else is a gRPC error (Trailers-Only) with `grpc-message` and
//! the extra `trailers` (`-bin` values are bytes). The handler runs on a tokio worker (see
//! `answer`), two of them, so one keeps reading while the other waits for the GIL.

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tokio::sync::{oneshot, Semaphore};

// gRPC status codes used by the transport itself.
const INTERNAL: u16 = 13;
const RESOURCE_EXHAUSTED: u16 = 8;
const UNIMPLEMENTED: u16 = 12;

/// A unary gRPC response body: at most one data frame, then the trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2: bytes outside 0x20-0x7E, and `%`).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Trailers-Only error answer: the status is in the (only) header block.
fn error(code: u16, message: &str, extra: Vec<(HeaderName, HeaderValue)>) -> Response<GrpcBody> {
    let mut resp = Response::new(GrpcBody {
        data: None,
        trailers: None,
    });
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    for (k, v) in extra {
        h.append(k, v);
    }
    resp
}

fn ok(message: &[u8]) -> Response<GrpcBody> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut resp = Response::new(GrpcBody {
        data: Some(frame.freeze()),
        trailers: Some(trailers),
    });
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    resp.headers_mut().insert(
        "grpc-accept-encoding",
        HeaderValue::from_static("identity,gzip"),
    );
    resp
}

/// What the Python handler answered, converted while holding the GIL.
enum Answer {
    Ok(Vec<u8>),
    Error(u16, String, Vec<(HeaderName, HeaderValue)>),
}

fn trailer(key: &str, value: &Bound<'_, PyAny>) -> PyResult<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|e| PyRuntimeError::new_err(format!("trailer name {key:?}: {e}")))?;
    let text = if key.ends_with("-bin") {
        STANDARD_NO_PAD.encode(value.extract::<Vec<u8>>()?)
    } else {
        value.extract::<String>()?
    };
    let value = HeaderValue::from_str(&text)
        .map_err(|e| PyRuntimeError::new_err(format!("trailer {key:?}: {e}")))?;
    Ok((name, value))
}

fn call_handler(
    handler: &Py<PyAny>,
    path: &str,
    message: Option<&[u8]>,
    compressed: bool,
    authorization: Option<String>,
    refused: &str,
) -> Answer {
    Python::attach(|py| {
        let run = || -> PyResult<Answer> {
            let result = handler.call1(
                py,
                (
                    path,
                    message.map(|m| PyBytes::new(py, m)),
                    compressed,
                    authorization,
                    refused,
                ),
            )?;
            let t = result.bind(py).cast::<PyTuple>()?.clone();
            let code: u16 = t.get_item(0)?.extract()?;
            if code == 0 {
                return Ok(Answer::Ok(t.get_item(2)?.extract::<Vec<u8>>()?));
            }
            let text: String = t.get_item(1)?.extract()?;
            let mut extra = Vec::new();
            for item in t.get_item(3)?.try_iter()? {
                let pair = item?;
                let key: String = pair.get_item(0)?.extract()?;
                extra.push(trailer(&key, &pair.get_item(1)?)?);
            }
            Ok(Answer::Error(code, text, extra))
        };
        run().unwrap_or_else(|e| {
            e.print(py); // the handler guards its own errors; this is a bug worth a traceback
            Answer::Error(INTERNAL, "receiver failed".into(), Vec::new())
        })
    })
}

struct Shared {
    handler: Py<PyAny>,
    max_message: usize,
    calls: Semaphore,    // concurrent calls; more are refused RESOURCE_EXHAUSTED
    inflight: Semaphore, // request bytes being read or handled, across calls
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        let mut resp = Response::new(GrpcBody {
            data: None,
            trailers: None,
        });
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Ok(resp);
    }
    let Ok(_permit) = shared.calls.try_acquire() else {
        return Ok(error(
            RESOURCE_EXHAUSTED,
            "Concurrent RPC limit exceeded!",
            Vec::new(),
        ));
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    let encoding = header("grpc-encoding").unwrap_or_else(|| "identity".into());
    let limit = shared.max_message + 5;
    // Read the body frame by frame, each chunk paid for from the in-flight byte budget: many
    // concurrent large requests get UNAVAILABLE (retry) instead of growing memory.
    let mut incoming = req.into_body();
    let mut buf = BytesMut::new();
    let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
    let mut refused = "";
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else {
            return Ok(error(
                INTERNAL,
                "request body could not be read",
                Vec::new(),
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            refused = "too_large";
            break;
        }
        let Ok(permit) = shared.inflight.try_acquire_many(data.len() as u32) else {
            refused = "receiver_busy";
            break;
        };
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        buf.extend_from_slice(&data);
    }
    if !refused.is_empty() {
        // the handler is told (message None) so the refusal is counted and answered
        drop(held);
        return Ok(answer(&shared, &path, None, false, authorization, refused).await);
    }
    let body = buf.freeze();
    // One length-prefixed message: [compressed flag][u32 length][message].
    if body.len() < 5
        || body.len() - 5 != u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize
    {
        return Ok(error(
            INTERNAL,
            "malformed gRPC message frame (a unary call has one message)",
            Vec::new(),
        ));
    }
    if body[0] > 1 {
        let msg = format!("invalid gRPC compressed flag {}", body[0]);
        return Ok(error(INTERNAL, &msg, Vec::new()));
    }
    let compressed = body[0] == 1;
    if compressed && encoding != "gzip" {
        let msg = format!("Compression algorithm {encoding:?} is not supported (identity, gzip)");
        return Ok(error(UNIMPLEMENTED, &msg, Vec::new()));
    }
    let answer = answer(
        &shared,
        &path,
        Some(&body[5..]),
        compressed,
        authorization,
        "",
    )
    .await;
    drop(held);
    Ok(answer)
}

/// The Python handler's answer, called on this worker thread. Not on tokio's blocking pool:
/// a hand-over back to the worker after the call waits for the core (the sidecar runs on one)
/// while the processing thread, just woken by the request, runs the chain (measured: p50 4.5
/// ms per batch instead of 1.5). The GIL serializes the handlers anyway; the second worker
/// keeps reading other connections while one waits for it. It yields once first: the
/// connection's own task, if it is queued on this worker (tokio's LIFO slot cannot be
/// stolen), runs before the call blocks, so meanwhile the connection is woken on the other
/// worker and keeps reading the calls that follow.
async fn answer(
    shared: &Shared,
    path: &str,
    message: Option<&[u8]>,
    compressed: bool,
    authorization: Option<String>,
    refused: &str,
) -> Response<GrpcBody> {
    tokio::task::yield_now().await;
    let answer = call_handler(
        &shared.handler,
        path,
        message,
        compressed,
        authorization,
        refused,
    );
    match answer {
        Answer::Ok(m) => ok(&m),
        Answer::Error(code, text, extra) => error(code, &text, extra),
    }
}

async fn serve(listener: StdListener, shared: Arc<Shared>, stop: oneshot::Receiver<f64>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(_) => return,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = stop;
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |r| handle(shared.clone(), r));
                let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_frame_size(1 << 20)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            grace = &mut stop => break grace.unwrap_or(0.0),
        }
    };
    drop(listener); // no new connections; GOAWAY to the open ones, in-flight calls finish
    let _ =
        tokio::time::timeout(Duration::from_secs_f64(grace.max(0.0)), graceful.shutdown()).await;
}

/// The transport of the OTLP/gRPC receiver (see the module docs).
#[pyclass(module = "llm_pipeline_native")]
pub struct GrpcServer {
    port: u16,
    state: Option<(StdListener, Arc<Shared>)>, // until start()
    stop: Option<oneshot::Sender<f64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[pymethods]
impl GrpcServer {
    /// Binds `endpoint` ("host:port"; port 0 picks one) now, serves from `start()`.
    #[new]
    #[pyo3(signature = (endpoint, handler, max_message_bytes, max_inflight_bytes, max_concurrent_calls = 64))]
    fn new(
        endpoint: &str,
        handler: Py<PyAny>,
        max_message_bytes: usize,
        max_inflight_bytes: usize,
        max_concurrent_calls: usize,
    ) -> PyResult<Self> {
        let listener = StdListener::bind(endpoint).map_err(|e| {
            PyOSError::new_err(format!("cannot bind OTLP/gRPC receiver to {endpoint}: {e}"))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| PyOSError::new_err(e.to_string()))?
            .port();
        let shared = Arc::new(Shared {
            handler,
            max_message: max_message_bytes,
            calls: Semaphore::new(max_concurrent_calls.max(1)),
            inflight: Semaphore::new(max_inflight_bytes.clamp(1, Semaphore::MAX_PERMITS)),
        });
        Ok(Self {
            port,
            state: Some((listener, shared)),
            stop: None,
            thread: None,
        })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    fn start(&mut self) -> PyResult<()> {
        let Some((listener, shared)) = self.state.take() else {
            return Err(PyRuntimeError::new_err("already started"));
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2) // see `answer`: handlers run on the workers
            .thread_name("otlp-grpc")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            runtime.block_on(serve(listener, shared, rx));
            runtime.shutdown_timeout(Duration::from_secs(1));
        }));
        Ok(())
    }

    /// Stops accepting, lets calls under way finish for up to `grace_s`, then returns.
    fn stop(&mut self, py: Python<'_>, grace_s: f64) {
        self.state = None;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(grace_s);
        }
        if let Some(thread) = self.thread.take() {
            py.detach(move || {
                let _ = thread.join();
            });
        }
    }
}
