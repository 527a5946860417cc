//! `GrpcClient`: the OTLP/gRPC exporter's transport (one unary call per payload) in Rust.
//!
//! grpcio spends ~0.2 ms of CPU per 58 KB call; this client sends the already-serialized
//! request over one kept HTTP/2 connection (hyper) with the GIL released. What a status means
//! (retry or not) stays in Python: `pipeline.exporters.otlp.GrpcSender`, which uses grpcio
//! without this module and for TLS.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

// gRPC status codes the transport produces itself.
const UNKNOWN: u16 = 2;
const DEADLINE_EXCEEDED: u16 = 4;
const UNAVAILABLE: u16 = 14;
const INTERNAL: u16 = 13;

/// The gRPC status for an HTTP status that is not 200 (gRPC's HTTP-to-gRPC mapping).
fn status_for_http(code: u16) -> u16 {
    match code {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[pyclass(module = "llm_pipeline_native")]
pub struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    target: String,
    uri: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    gzip: bool,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl GrpcClient {
    async fn connect(target: &str) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect {target}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(1 << 20)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP/2 handshake with {target}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await; // drives the connection until it closes
        });
        Ok(send)
    }

    /// One call: (status, message); the connection is dropped after a transport failure.
    /// The connection is only driven during calls (a current-thread runtime: no thread
    /// hand-over per call), so a connection the server closed while idle shows up here: a
    /// request that was not sent on it is sent once more on a fresh connection.
    async fn unary(
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        target: &str,
        request: Request<Full<Bytes>>,
    ) -> (u16, String) {
        let mut request = request;
        let mut fresh = false;
        let response = loop {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                match Self::connect(target).await {
                    Ok(c) => *conn = Some(c),
                    Err(e) => return (UNAVAILABLE, e),
                }
                fresh = true;
            }
            let Some(send) = conn.as_mut() else {
                return (UNAVAILABLE, "no connection".into());
            };
            let sent = match send.ready().await {
                Ok(()) => send.try_send_request(request).await,
                Err(e) => {
                    *conn = None;
                    if fresh {
                        return (UNAVAILABLE, format!("connection to {target}: {e}"));
                    }
                    fresh = true;
                    continue;
                }
            };
            match sent {
                Ok(r) => break r,
                Err(mut e) => {
                    *conn = None;
                    match e.take_message() {
                        Some(unsent) if !fresh => request = unsent,
                        _ => return (UNAVAILABLE, format!("request to {target}: {}", e.error())),
                    }
                }
            }
        };
        let (parts, body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            let code = parts.status.as_u16();
            return (
                status_for_http(code),
                format!("HTTP status {code} from {target}"),
            );
        }
        // Trailers-Only (an error) carries the status in the headers; otherwise the trailers.
        let mut status = parts.headers.get("grpc-status").cloned();
        let mut message = parts.headers.get("grpc-message").cloned();
        if status.is_none() {
            match body.collect().await {
                Ok(collected) => {
                    if let Some(t) = collected.trailers() {
                        status = t.get("grpc-status").cloned();
                        message = t.get("grpc-message").cloned();
                    }
                }
                Err(e) => {
                    *conn = None;
                    return (UNAVAILABLE, format!("response from {target}: {e}"));
                }
            }
        }
        let Some(status) = status else {
            return (
                INTERNAL,
                format!("no grpc-status in the response from {target}"),
            );
        };
        let code = status
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(UNKNOWN);
        let text = message
            .and_then(|m| m.to_str().ok().map(percent_decode))
            .unwrap_or_default();
        (code, text)
    }
}

#[pymethods]
impl GrpcClient {
    /// `target` "host:port", `path` the method ("/package.Service/Method"), `headers` extra
    /// metadata; nothing connects before the first call.
    #[new]
    fn new(
        target: String,
        path: &str,
        headers: Vec<(String, String)>,
        timeout_s: f64,
        gzip: bool,
    ) -> PyResult<Self> {
        let uri: http::Uri = format!("http://{target}{path}")
            .parse()
            .map_err(|e| PyValueError::new_err(format!("{target}{path}: {e}")))?;
        let mut parsed = Vec::with_capacity(headers.len());
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| PyValueError::new_err(format!("header {k:?}: {e}")))?;
            let value = HeaderValue::from_str(&v)
                .map_err(|e| PyValueError::new_err(format!("header {k:?}: {e}")))?;
            parsed.push((name, value));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self {
            runtime,
            target,
            uri,
            headers: parsed,
            timeout: Duration::from_secs_f64(timeout_s.max(0.001)),
            gzip,
            conn: None,
        })
    }

    /// Sends `data` (a serialized Export*ServiceRequest): (gRPC status code, message).
    fn call(&mut self, py: Python<'_>, data: &[u8]) -> (u16, String) {
        py.detach(|| {
            let payload: Vec<u8>;
            let message: &[u8] = if self.gzip {
                let mut enc =
                    GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
                if enc.write_all(data).is_err() {
                    return (INTERNAL, "gzip failed".into());
                }
                payload = match enc.finish() {
                    Ok(p) => p,
                    Err(_) => return (INTERNAL, "gzip failed".into()),
                };
                &payload
            } else {
                data
            };
            let mut frame = BytesMut::with_capacity(5 + message.len());
            frame.put_u8(u8::from(self.gzip));
            frame.put_u32(message.len() as u32);
            frame.put_slice(message);
            let mut builder = Request::post(self.uri.clone())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header(
                    "grpc-timeout",
                    format!("{}m", self.timeout.as_millis().max(1)),
                )
                .header("user-agent", "llm-pipeline-native");
            if self.gzip {
                builder = builder.header("grpc-encoding", "gzip");
            }
            for (k, v) in &self.headers {
                builder = builder.header(k, v);
            }
            let request = match builder.body(Full::new(frame.freeze())) {
                Ok(r) => r,
                Err(e) => return (INTERNAL, e.to_string()),
            };
            let (conn, target, timeout) = (&mut self.conn, self.target.as_str(), self.timeout);
            self.runtime.block_on(async move {
                match tokio::time::timeout(timeout, Self::unary(conn, target, request)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        *conn = None; // the stream may still be open: start clean
                        (
                            DEADLINE_EXCEEDED,
                            format!("no answer from {target} within {timeout:?}"),
                        )
                    }
                }
            })
        })
    }

    fn close(&mut self) {
        self.conn = None;
    }
}
