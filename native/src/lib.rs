//! Native helpers for the sidecar's hot path (`pipeline._native` loads them; each has a
//! pure-Python twin that stays the reference, and the tests hold the two equal).
//!
//! - `item_ranges`: where each resource and span / log record of a serialized OTLP traces or
//!   logs request lies (a walk of tags and lengths, nothing decoded).
//! - `CallReader.read` (src/calls.rs): normalize's per-span reading, the raw fields
//!   (`CALL_FIELDS`) of each span that may be a model call, so upb materializes no span normalize does not keep.
//! - `HintScanner.hits`: the redaction prefilter's hint regexes over a request (and over its
//!   case/digit-folded copy), with the `regex` crate's literal-accelerated search.
//! - `trace_targets`, `patch`, `invalid_spans`, `span_parents`: redaction's targets, edits
//!   applied to the received bytes, the receivers' id check, dedupe's parent walk.
//! - `DimensionReader.index` (src/dims.rs): attribution's dimension values of a request's spans,
//!   inherited through their ancestors; `label_calls`, the calls' labels from them.
//! - `HeavyHitters` (src/heavy.rs): a dimension's space-saving top-k of values by cost.
//! - `GrpcServer` (src/grpc.rs), `GrpcClient` (src/grpc_client.rs): the OTLP/gRPC receiver's
//!   and exporter's native transport (`grpc_transport`).
//!
//! Only bytes the protobuf parser has already accepted are passed in; anything unexpected
//! raises ValueError and the caller takes the Python path.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use regex::bytes::Regex;

mod calls;
mod dims;
mod grpc;
mod grpc_client;
mod heavy;
mod otlp_json;
mod wire;

fn value_error(e: wire::Error) -> PyErr {
    PyValueError::new_err(e.0)
}

/// (start, end, resource, scope, item) of every resource and item, sorted by start; scope and
/// item are -1 for a resource itself (the Python twin: `pipeline.processors._wire`).
#[pyfunction]
fn item_ranges(data: &[u8]) -> PyResult<Vec<wire::ItemRange>> {
    let mut out = Vec::with_capacity(128);
    wire::item_ranges(data, &mut out).map_err(value_error)?;
    out.sort_unstable();
    Ok(out)
}

/// What redaction must walk in a traces request given the prefilter's hint matches (see
/// `wire::trace_targets`): the attributes, names and status messages a match overlaps.
#[pyfunction]
fn trace_targets(data: &[u8], hits: Vec<(usize, usize)>) -> PyResult<Vec<wire::Target>> {
    let mut out = Vec::new();
    if !hits.is_empty() {
        wire::trace_targets(data, &wire::Hits::new(hits), &mut out).map_err(value_error)?;
    }
    Ok(out)
}

/// The request with the edits applied: (start, end, bytes, append) each, in any order (sorted
/// here by start and end, stably); see `wire::patch`. ValueError when an edit is not the
/// content of a field.
#[pyfunction]
fn patch<'py>(
    py: Python<'py>,
    data: &[u8],
    edits: Vec<(usize, usize, Bound<'py, PyBytes>, bool)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut edits: Vec<wire::Edit<'_>> = edits
        .iter()
        .map(|(start, end, bytes, append)| wire::Edit {
            start: *start,
            end: *end,
            bytes: bytes.as_bytes(),
            append: *append,
        })
        .collect();
    edits.sort_by_key(|e| (e.start, e.end));
    let out = wire::patch(data, &edits).map_err(value_error)?;
    Ok(PyBytes::new(py, &out))
}

/// Indices (parse order) of the spans of a traces request whose ids are not valid: the
/// receivers reject them (the twin: `pipeline.receivers.decode.drop_invalid_spans`).
#[pyfunction]
fn invalid_spans(data: &[u8]) -> PyResult<Vec<usize>> {
    let mut ids = Vec::with_capacity(128);
    wire::span_ids(data, &mut ids).map_err(value_error)?;
    let len = |(a, b): (usize, usize)| b - a;
    Ok(ids
        .iter()
        .enumerate()
        .filter(|(_, [t, s, p])| {
            len(*t) != 16
                || len(*s) != 8
                || !(len(*p) == 0 || len(*p) == 8)
                || data[t.0..t.1].iter().all(|&b| b == 0)
        })
        .map(|(i, _)| i)
        .collect())
}

/// trace_id + span_id -> trace_id + parent_span_id (None for a root) of every span of a traces
/// request, later spans overwriting earlier ones (the twin: the walk in dedupe).
#[pyfunction]
fn span_parents<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let mut ids = Vec::with_capacity(128);
    wire::span_ids(data, &mut ids).map_err(value_error)?;
    let out = PyDict::new(py);
    let mut key = Vec::with_capacity(24);
    for [t, s, p] in ids {
        key.clear();
        key.extend_from_slice(&data[t.0..t.1]);
        key.extend_from_slice(&data[s.0..s.1]);
        let k = PyBytes::new(py, &key);
        if p.1 > p.0 {
            key.truncate(t.1 - t.0);
            key.extend_from_slice(&data[p.0..p.1]);
            out.set_item(k, PyBytes::new(py, &key))?;
        } else {
            out.set_item(k, py.None())?;
        }
    }
    Ok(out)
}

/// The prefilter's hints: `raw` patterns run over the request, `folded` ones over its copy
/// mapped through `fold` (a 256-byte table, as `bytes.translate` takes).
#[pyclass(module = "llm_pipeline_native")]
struct HintScanner {
    raw: Vec<Regex>,
    folded: Vec<Regex>,
    fold: [u8; 256],
}

fn compile(patterns: Vec<Vec<u8>>) -> PyResult<Vec<Regex>> {
    patterns
        .into_iter()
        .map(|p| {
            let text =
                String::from_utf8(p).map_err(|_| PyValueError::new_err("pattern is not UTF-8"))?;
            // (?-u): bytes semantics, as Python's bytes patterns (classes match any byte, \s is
            // ASCII whitespace); (?s) is not set, as in the Python patterns.
            Regex::new(&format!("(?-u){text}")).map_err(|e| PyValueError::new_err(e.to_string()))
        })
        .collect()
}

#[pymethods]
impl HintScanner {
    #[new]
    fn new(raw: Vec<Vec<u8>>, folded: Vec<Vec<u8>>, fold: Vec<u8>) -> PyResult<Self> {
        let fold: [u8; 256] = fold
            .try_into()
            .map_err(|_| PyValueError::new_err("fold must be a 256-byte table"))?;
        Ok(HintScanner {
            raw: compile(raw)?,
            folded: compile(folded)?,
            fold,
        })
    }

    /// (start, end) of every hint match: each raw pattern in turn, then each folded one, each
    /// pattern's matches left to right and non-overlapping (as `re.finditer`).
    fn hits(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for p in &self.raw {
            out.extend(p.find_iter(data).map(|m| (m.start(), m.end())));
        }
        if !self.folded.is_empty() {
            let folded: Vec<u8> = data.iter().map(|&b| self.fold[b as usize]).collect();
            for p in &self.folded {
                out.extend(p.find_iter(&folded).map(|m| (m.start(), m.end())));
            }
        }
        out
    }
}

#[pymodule]
fn llm_pipeline_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(item_ranges, m)?)?;
    m.add_function(wrap_pyfunction!(invalid_spans, m)?)?;
    m.add_function(wrap_pyfunction!(trace_targets, m)?)?;
    m.add_function(wrap_pyfunction!(patch, m)?)?;
    m.add_function(wrap_pyfunction!(span_parents, m)?)?;
    m.add_class::<calls::CallReader>()?;
    m.add("CALL_FIELDS", PyTuple::new(m.py(), calls::call_fields())?)?;
    m.add_class::<HintScanner>()?;
    m.add_class::<dims::DimensionReader>()?;
    m.add_class::<dims::SpanIndex>()?;
    m.add_function(wrap_pyfunction!(dims::label_calls, m)?)?;
    m.add_class::<heavy::HeavyHitters>()?;
    m.add_class::<otlp_json::JsonEncoder>()?;
    m.add_class::<grpc::GrpcServer>()?;
    m.add_class::<grpc_client::GrpcClient>()?;
    Ok(())
}
