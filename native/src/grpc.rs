//! `GrpcServer`: the OTLP/gRPC receiver's transport (HTTP/2 and gRPC framing) in Rust.
//!
//! A Python gRPC server spends ~0.85 ms of CPU per 58 KB request before any of our code runs
//! (its completion-queue thread hands each call to a thread pool, both holding the GIL); this
//! one reads the request on a tokio thread without the GIL and calls the Python handler once
//! per request with the message bytes. What the request means (decoding, the answer) stays in
//! Python: `pipeline.receivers.otlp_grpc`, which falls back to grpcio without this module and
//! for TLS.
//!
//! The handler: `handler(path, message, refusal) -> (status, message, body, trailers)`.
//! `message` is the request message, gunzipped; or None when the transport refused the
//! request, and `refusal` is then `(reason, status, text)`: the rejected-items reason, the
//! gRPC status to answer and why (the handler counts it and may add trailers, e.g. a retry
//! hint). `status` 0 answers `body` as the response message, anything else is a gRPC error
//! (Trailers-Only) with `grpc-message` and the extra `trailers` (`-bin` values are bytes).
//! Connection-level events call it with path "" (reasons "too_many_connections",
//! "accept_failed"; the answer is ignored). The handler runs on a tokio worker (see `answer`),
//! two of them, so one keeps reading while the other waits for the GIL.
//!
//! Hostile clients are bounded (issue 21.4): each connection has at most
//! `max_streams_per_connection` streams (SETTINGS_MAX_CONCURRENT_STREAMS), a request must
//! arrive whole within `request_timeout_s` (then it is answered and its stream reset), a
//! connection with no stream for `idle_timeout_s` gets GOAWAY, and at most `max_connections`
//! are open (at the cap the longest idle one is closed for a new one, or the new one is refused
//! when none is idle). The bearer token is checked from the headers before the body is read,
//! and the in-flight byte budget pays for what a request costs once gunzipped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
use tokio::sync::{watch, Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

// gRPC status codes used by the transport itself.
const INVALID_ARGUMENT: u16 = 3;
const DEADLINE_EXCEEDED: u16 = 4;
const RESOURCE_EXHAUSTED: u16 = 8;
const UNIMPLEMENTED: u16 = 12;
const INTERNAL: u16 = 13;
const UNAVAILABLE: u16 = 14;
const UNAUTHENTICATED: u16 = 16;

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

/// Why the transport refused a request: (rejected-items reason, gRPC status, text).
type Refusal = (&'static str, u16, String);

fn call_handler(
    handler: &Py<PyAny>,
    path: &str,
    message: Option<&[u8]>,
    refusal: Option<Refusal>,
) -> Answer {
    Python::attach(|py| {
        let run = || -> PyResult<Answer> {
            let result =
                handler.call1(py, (path, message.map(|m| PyBytes::new(py, m)), refusal))?;
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

/// The limits a `GrpcServer` enforces (see the module docs).
struct Limits {
    max_message: usize,
    max_decompressed: usize,
    max_streams_per_connection: u32,
    max_connections: usize,
    request_timeout: Duration,
    idle_timeout: Duration,
    auth_token: Option<String>,
    paths: Vec<String>,
}

/// One open connection: its streams under way and since when it has had none.
struct Conn {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.idle_since
                .lock()
                .map(|t| t.elapsed())
                .unwrap_or_default(),
        )
    }

    /// GOAWAY, then a hard close if the peer lingers (see `serve_connection`).
    fn ask_to_close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.close.notify_one();
        }
    }
}

/// A stream under way on a connection; the connection is idle again when the last one ends.
struct StreamGuard(Arc<Conn>);

impl StreamGuard {
    fn new(conn: Arc<Conn>) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        StreamGuard(conn)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.idle_since.lock() {
            *t = Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Shared {
    handler: Py<PyAny>,
    limits: Limits,
    calls: Semaphore, // requests being handled; more are answered UNAVAILABLE + retry hint
    inflight: Semaphore, // request bytes being read, gunzipped or handled, across calls
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    events: Mutex<HashMap<&'static str, (u64, String)>>, // see `connection_event`
}

impl Shared {
    /// Room for one more connection: under the cap, or by closing the longest idle one.
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock().ok()?;
        let open = conns
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire))
            .count();
        if open >= self.limits.max_connections && !evict_idlest(&conns) {
            return None;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn forget(&self, id: u64) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&id);
        }
    }
}

/// Asks the connection idle the longest to close; false when none is idle.
fn evict_idlest(conns: &HashMap<u64, Arc<Conn>>) -> bool {
    let idlest = conns
        .values()
        .filter(|c| !c.closing.load(Ordering::Acquire))
        .filter_map(|c| c.idle_for().map(|d| (d, c)))
        .max_by_key(|(d, _)| *d);
    match idlest {
        Some((_, c)) => {
            c.ask_to_close();
            true
        }
        None => false,
    }
}

/// `Authorization: Bearer <token>` as `pipeline.receivers._common.bearer_ok` reads it (scheme
/// case-insensitive, token trimmed), compared in constant time.
fn bearer_ok(expected: &str, header: Option<&HeaderValue>) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let (a, b) = (token.trim().as_bytes(), expected.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    scheme.eq_ignore_ascii_case("bearer") && diff == 0
}

/// Gunzips (every member) with `max` as the cap, paying for each chunk from the in-flight
/// budget; the permit grows with the output.
fn gunzip<'a>(
    shared: &'a Shared,
    data: &[u8],
    held: &mut Option<SemaphorePermit<'a>>,
) -> Result<Vec<u8>, Refusal> {
    let max = shared.limits.max_decompressed;
    let mut reader = flate2::read::MultiGzDecoder::new(data);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| {
            let text = format!("invalid gzip body: {e}");
            ("malformed", INVALID_ARGUMENT, text)
        })?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            let text = format!("decompressed message exceeds {max} bytes");
            return Err(("too_large", RESOURCE_EXHAUSTED, text));
        }
        take(shared, held, n)?;
        out.extend_from_slice(&chunk[..n]);
    }
}

fn busy() -> Refusal {
    let text = "receiver busy; retry after 1s".to_owned();
    ("receiver_busy", UNAVAILABLE, text)
}

/// `n` more bytes from the in-flight budget, or "receiver busy".
fn take<'a>(
    shared: &'a Shared,
    held: &mut Option<SemaphorePermit<'a>>,
    n: usize,
) -> Result<(), Refusal> {
    let n = u32::try_from(n).map_err(|_| busy())?;
    let permit = shared.inflight.try_acquire_many(n).map_err(|_| busy())?;
    match held.as_mut() {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Reads the whole request body within the deadline, paying for it as it arrives.
async fn read_body<'a>(
    shared: &'a Shared,
    mut incoming: Incoming,
    deadline: Instant,
    held: &mut Option<SemaphorePermit<'a>>,
) -> Result<Bytes, Refusal> {
    let limit = shared.limits.max_message + 5;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => {
                let secs = shared.limits.request_timeout.as_secs_f64();
                let text = format!("request not received in full within {secs}s");
                return Err(("request_timeout", DEADLINE_EXCEEDED, text));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => {
                // the client reset the stream: nobody is left to answer
                let text = "request body could not be read".to_owned();
                return Err(("cancelled", INTERNAL, text));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let text = format!("request exceeds {} bytes", shared.limits.max_message);
            return Err(("too_large", RESOURCE_EXHAUSTED, text));
        }
        take(shared, held, data.len())?;
        buf.extend_from_slice(&data);
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let _stream = StreamGuard::new(conn);
    let deadline = Instant::now() + shared.limits.request_timeout;
    let path = req.uri().path().to_owned();
    if !shared.limits.paths.contains(&path) {
        let text = format!("unknown method {path}");
        return Ok(error(UNIMPLEMENTED, &text, Vec::new()));
    }
    let grpc = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        let text = "content-type must be application/grpc".to_owned();
        // counted by the handler; the answer is plain HTTP
        let refusal = ("unsupported_media_type", INVALID_ARGUMENT, text);
        answer(&shared, &path, None, Some(refusal)).await;
        let mut resp = Response::new(GrpcBody {
            data: None,
            trailers: None,
        });
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Ok(resp);
    }
    // refused from the headers alone: the body is never read (hyper resets the stream)
    if let Some(token) = &shared.limits.auth_token {
        if !bearer_ok(token, req.headers().get("authorization")) {
            let text = "missing or invalid bearer token".to_owned();
            let refusal = ("unauthenticated", UNAUTHENTICATED, text);
            return Ok(answer(&shared, &path, None, Some(refusal)).await);
        }
    }
    let encoding = req
        .headers()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_owned();
    let mut held = None;
    let message = match read_message(&shared, req.into_body(), deadline, &encoding, &mut held).await
    {
        Ok(m) => m,
        Err(refusal) => {
            drop(held);
            return Ok(answer(&shared, &path, None, Some(refusal)).await);
        }
    };
    let Ok(_call) = shared.calls.try_acquire() else {
        drop((held, message));
        return Ok(answer(&shared, &path, None, Some(busy())).await);
    };
    let response = answer(&shared, &path, Some(&message), None).await;
    drop((held, message));
    Ok(response)
}

/// The request's one message, gunzipped when it says so; its bytes stay paid for in `held`.
async fn read_message<'a>(
    shared: &'a Shared,
    incoming: Incoming,
    deadline: Instant,
    encoding: &str,
    held: &mut Option<SemaphorePermit<'a>>,
) -> Result<Bytes, Refusal> {
    let body = read_body(shared, incoming, deadline, held).await?;
    // One length-prefixed message: [compressed flag][u32 length][message].
    if body.len() < 5
        || body.len() - 5 != u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize
    {
        let text = "malformed gRPC message frame (a unary call has one message)".to_owned();
        return Err(("malformed", INTERNAL, text));
    }
    match body[0] {
        0 => Ok(body.slice(5..)),
        1 if encoding == "gzip" => {
            let mut inflated = None;
            let out = gunzip(shared, &body[5..], &mut inflated);
            // the compressed bytes are let go; the inflated ones stay paid for
            drop((body, held.take()));
            *held = inflated;
            Ok(Bytes::from(out?))
        }
        1 => {
            let text =
                format!("Compression algorithm {encoding:?} is not supported (identity, gzip)");
            Err(("malformed", UNIMPLEMENTED, text))
        }
        flag => {
            let text = format!("invalid gRPC compressed flag {flag}");
            Err(("malformed", INTERNAL, text))
        }
    }
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
    refusal: Option<Refusal>,
) -> Response<GrpcBody> {
    tokio::task::yield_now().await;
    match call_handler(&shared.handler, path, message, refusal) {
        Answer::Ok(m) => ok(&m),
        Answer::Error(code, text, extra) => error(code, &text, extra),
    }
}

/// Tells the handler about a connection-level event (counted and logged there), off the
/// accept loop: events that happen while one report waits for the GIL go in the next one,
/// with their number in the status field.
fn connection_event(shared: &Arc<Shared>, reason: &'static str, text: String) {
    let first = match shared.events.lock() {
        Ok(mut pending) => {
            let e = pending.entry(reason).or_insert((0, String::new()));
            e.0 += 1;
            e.1 = text;
            e.0 == 1
        }
        Err(_) => false,
    };
    if first {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let taken = shared.events.lock().ok().and_then(|mut p| p.remove(reason));
            if let Some((n, text)) = taken {
                let n = u16::try_from(n).unwrap_or(u16::MAX);
                let _ = call_handler(&shared.handler, "", None, Some((reason, n, text)));
            }
        });
    }
}

/// How long a connection closed for being idle (or the longest idle at the cap) may take to
/// say goodbye (GOAWAY, a ping round trip) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves one connection until it ends, is idle too long, is asked to close (the cap) or the
/// server stops; a connection asked to close that lingers past the grace is dropped.
async fn serve_connection(
    shared: Arc<Shared>,
    id: u64,
    conn: Arc<Conn>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<Option<f64>>,
) {
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let service =
        hyper::service::service_fn(move |r| handle(svc_shared.clone(), svc_conn.clone(), r));
    let http = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .max_frame_size(1 << 20)
        .max_concurrent_streams(shared.limits.max_streams_per_connection)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(http);
    let idle = shared.limits.idle_timeout;
    let mut hard_deadline: Option<Instant> = None;
    loop {
        // re-checked at least this often while streams are open
        let idle_check = match conn.idle_for() {
            Some(d) => Instant::now() + idle.saturating_sub(d),
            None => Instant::now() + idle,
        };
        let closing = hard_deadline.is_some();
        let grace = tokio::select! {
            _ = &mut http => break,
            _ = tokio::time::sleep_until(idle_check), if !closing => {
                match conn.idle_for() {
                    Some(d) if d >= idle => CLOSE_GRACE,
                    _ => continue,
                }
            }
            _ = conn.close.notified(), if !closing => CLOSE_GRACE,
            changed = stop.changed(), if !closing => match (changed, *stop.borrow()) {
                (Ok(()), Some(g)) => Duration::from_secs_f64(g.max(0.0)),
                _ => Duration::ZERO,
            },
            _ = tokio::time::sleep_until(hard_deadline.unwrap_or_else(Instant::now)), if closing => break,
        };
        conn.closing.store(true, Ordering::Release);
        http.as_mut().graceful_shutdown();
        hard_deadline = Some(Instant::now() + grace);
    }
    shared.forget(id);
}

/// Out of file descriptors (or memory for sockets): not the peer's fault, and retrying at once
/// spins.
fn resource_shortage(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn serve(listener: StdListener, shared: Arc<Shared>, stop: watch::Receiver<Option<f64>>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(_) => return,
    };
    let mut stop_rx = stop.clone();
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) if resource_shortage(&e) => {
                        // make room (the longest idle connection goes) and back off
                        if let Ok(conns) = shared.conns.lock() {
                            evict_idlest(&conns);
                        }
                        connection_event(&shared, "accept_failed", format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(_) => continue, // the peer went away before accept: nothing to do
                };
                let Some((id, conn)) = shared.admit() else {
                    drop(stream);
                    let max = shared.limits.max_connections;
                    connection_event(
                        &shared,
                        "too_many_connections",
                        format!("{max} connections open, none idle: new connection closed"),
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(shared.clone(), id, conn, stream, stop.clone()));
            }
            changed = stop_rx.changed() => {
                break match changed { Ok(()) => (*stop_rx.borrow()).unwrap_or(0.0), Err(_) => 0.0 };
            }
        }
    };
    drop(listener); // no new connections; GOAWAY to the open ones, calls under way finish
    let until =
        Instant::now() + Duration::from_secs_f64(grace.max(0.0)) + Duration::from_millis(50);
    while Instant::now() < until && shared.conns.lock().map(|c| !c.is_empty()).unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The transport of the OTLP/gRPC receiver (see the module docs).
#[pyclass(module = "llm_pipeline_native")]
pub struct GrpcServer {
    port: u16,
    listener: Option<StdListener>, // until start()
    shared: Arc<Shared>,
    stop: Option<watch::Sender<Option<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[pymethods]
impl GrpcServer {
    /// Binds `endpoint` ("host:port"; port 0 picks one) now, serves `paths` from `start()`.
    #[new]
    #[pyo3(signature = (
        endpoint, handler, paths, *, max_message_bytes, max_decompressed_bytes,
        max_inflight_bytes, max_concurrent_calls = 64, max_streams_per_connection = 32,
        max_connections = 1024, request_timeout_s = 30.0, idle_timeout_s = 120.0,
        auth_token = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        endpoint: &str,
        handler: Py<PyAny>,
        paths: Vec<String>,
        max_message_bytes: usize,
        max_decompressed_bytes: usize,
        max_inflight_bytes: usize,
        max_concurrent_calls: usize,
        max_streams_per_connection: u32,
        max_connections: usize,
        request_timeout_s: f64,
        idle_timeout_s: f64,
        auth_token: Option<String>,
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
        let seconds = |s: f64| Duration::from_secs_f64(s.clamp(0.001, 1e9));
        let shared = Arc::new(Shared {
            handler,
            limits: Limits {
                max_message: max_message_bytes,
                max_decompressed: max_decompressed_bytes,
                max_streams_per_connection: max_streams_per_connection.max(1),
                max_connections: max_connections.max(1),
                request_timeout: seconds(request_timeout_s),
                idle_timeout: seconds(idle_timeout_s),
                auth_token: auth_token.filter(|t| !t.is_empty()),
                paths,
            },
            calls: Semaphore::new(max_concurrent_calls.max(1)),
            inflight: Semaphore::new(max_inflight_bytes.clamp(1, Semaphore::MAX_PERMITS)),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            events: Mutex::new(HashMap::new()),
        });
        Ok(Self {
            port,
            listener: Some(listener),
            shared,
            stop: None,
            thread: None,
        })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Connections open now (those closing included).
    #[getter]
    fn connections(&self) -> usize {
        self.shared.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn start(&mut self) -> PyResult<()> {
        let shared = self.shared.clone();
        let Some(listener) = self.listener.take() else {
            return Err(PyRuntimeError::new_err("already started"));
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2) // see `answer`: handlers run on the workers
            .thread_name("otlp-grpc")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let (tx, rx) = watch::channel(None);
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            runtime.block_on(serve(listener, shared, rx));
            runtime.shutdown_timeout(Duration::from_secs(1));
        }));
        Ok(())
    }

    /// Stops accepting, lets calls under way finish for up to `grace_s`, then returns.
    fn stop(&mut self, py: Python<'_>, grace_s: f64) {
        self.listener = None;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Some(grace_s));
        }
        if let Some(thread) = self.thread.take() {
            py.detach(move || {
                let _ = thread.join();
            });
        }
    }
}
