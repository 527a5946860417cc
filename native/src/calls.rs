//! `CallReader.read`: normalize's per-span reading on the received bytes. For each span whose
//! attribute keys could make it a model call it returns the span's raw fields (`CALL_FIELDS`,
//! in that order): what the attributes, the span's head and its events say, as read, with no
//! rule applied. normalize applies the rules (is it a call, output = total - input, streaming,
//! server side, negatives dropped, the provider's and error type's tidying) once, in Python,
//! to what this reader and its Python twin read, so upb materializes only those spans.
//!
//! The convention tables stay in Python (`pipeline/processors/conventions`); they are handed
//! over at construction with each transform described as data. Whatever is not described
//! (a custom transform, a string that `to_int` would parse, a kvlist value) makes the reader
//! hand that span back (`None`) and Python reads it
//! through the parser, so both paths give the same calls (tests/processors/test_native.py).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyString, PyTuple};

use crate::wire::{self, Value};

// foldhash: fast and seeded per process, so keys cannot be chosen to collide
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The raw fields `read` returns per span, in order: these, then `FIELD_NAMES`, None where
/// absent (`call_fields()`; `pipeline._native.CALL_FIELDS` checks them at import).
const HEAD_FIELDS: [&str; 15] = [
    "service_name",
    "scope",
    "convention",
    "trace_id",
    "span_id",
    "parent_span_id",
    "kind",
    "start_ns",
    "end_ns",
    "status_code",
    "exception_type",
    "marked",
    "present",
    "chunk_ns",
    "wire_span",
];

pub fn call_fields() -> Vec<&'static str> {
    HEAD_FIELDS
        .iter()
        .chain(FIELD_NAMES.iter())
        .copied()
        .collect()
}

// The canonical fields the reader knows (pipeline.model.FIELDS and response_id).
const FIELD_NAMES: [&str; 18] = [
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "ttft_s",
    "streaming",
    "error_type",
    "server_ttft_s",
    "server_duration_s",
    "span_kind_hint",
    "cost_usd",
    "response_id",
];
const OPERATION: usize = 0;
const PROVIDER: usize = 1;
const REQUEST_MODEL: usize = 2;
const RESPONSE_MODEL: usize = 3;
const INPUT: usize = 4;
const REASONING: usize = 9;
const TTFT: usize = 10;
const STREAMING: usize = 11;
const SERVER_TTFT: usize = 13;
const SERVER_DURATION: usize = 14;
const COST: usize = 16;
const QUALIFYING: [usize; 4] = [REQUEST_MODEL, RESPONSE_MODEL, SERVER_TTFT, SERVER_DURATION];
const CONVENTION_FIELDS: [usize; 3] = [PROVIDER, REQUEST_MODEL, INPUT];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int,
    Float,
    Bool,
}

fn kind_of(field: usize) -> Kind {
    match field {
        INPUT..=REASONING => Kind::Int,
        TTFT | SERVER_TTFT | SERVER_DURATION | COST => Kind::Float,
        STREAMING => Kind::Bool,
        _ => Kind::Text,
    }
}

/// A transform of the tables, as data (`normalize._NATIVE_TRANSFORMS` describes them).
enum Transform {
    Str,   // to_str
    Int,   // to_int
    Float, // to_float
    Bool,  // to_bool
    /// to_str, then a lookup; `keep`: a string not in the table is kept (else it is None)
    Map {
        table: HashMap<String, String>,
        keep: bool,
    },
    Const(String),
    Prefix, // `openai/gpt-4o` -> `openai`, None without a prefix
    Python,
}

#[derive(Clone, Copy)]
enum Got<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

enum Step<'a> {
    Absent,
    Got(Got<'a>),
    Python,
}

fn text(d: &[u8], a: usize, b: usize) -> Option<&str> {
    std::str::from_utf8(&d[a..b]).ok()
}

const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// The transform of one attribute value, as its Python function would give it; `Python` when
/// only the function can say.
fn apply<'a>(t: &'a Transform, v: &Value, d: &'a [u8]) -> Step<'a> {
    let s = match v {
        Value::Complex => return Step::Python,
        Value::Str(a, b) => match text(d, *a, *b) {
            Some(s) => Some(s),
            None => return Step::Python,
        },
        Value::Unset => Some(""), // to_str(None) == ""
        _ => None,
    };
    let got = match (t, v) {
        (Transform::Python, _) => return Step::Python,
        (Transform::Const(c), _) => Got::Text(c),
        (Transform::Str, _) => match s {
            Some(s) => Got::Text(s),
            None => return Step::Python, // str() of a number or list
        },
        (Transform::Int, Value::Int(i)) => Got::Int(*i),
        (Transform::Int, Value::Double(f)) => {
            if f.is_finite() && f.abs() < TWO_63 {
                Got::Int(f.trunc() as i64)
            } else {
                return Step::Absent;
            }
        }
        (Transform::Float, Value::Int(i)) => Got::Float(*i as f64),
        (Transform::Float, Value::Double(f)) => {
            if f.is_finite() {
                Got::Float(*f)
            } else {
                return Step::Absent;
            }
        }
        (Transform::Int | Transform::Float, Value::Unset | Value::Bool(_)) => return Step::Absent,
        (Transform::Int | Transform::Float, _) => return Step::Python, // strings are parsed
        (Transform::Bool, Value::Bool(b)) => Got::Bool(*b),
        (Transform::Bool, Value::Int(i)) => Got::Bool(*i != 0),
        (Transform::Bool, Value::Double(f)) => Got::Bool(*f != 0.0),
        (Transform::Bool, Value::Unset) => Got::Bool(false),
        (Transform::Bool, _) => return Step::Python,
        (Transform::Map { table, keep }, _) => match s {
            Some(s) => match table.get(s) {
                Some(m) => Got::Text(m),
                None if *keep => Got::Text(s),
                None => return Step::Absent,
            },
            None => return Step::Python,
        },
        (Transform::Prefix, _) => match s {
            Some(s) => match s.split_once('/') {
                Some((head, _)) if !head.is_empty() => Got::Text(head),
                _ => return Step::Absent,
            },
            None => return Step::Python,
        },
    };
    match got {
        Got::Text("") => Step::Absent, // "" counts as absent (normalize reads on)
        g => Step::Got(g),
    }
}

struct Entry {
    field: usize,
    priority: i64,
    convention: usize,
    transform: usize,
}

/// What the tables say of one attribute key (kept per interned key).
struct KeyInfo {
    text: Box<str>,
    entry: Option<usize>,  // index into `entries`
    marker: Option<usize>, // index into `markers`
    present: bool,         // a key enrich must not write again
}

struct Source {
    attr: usize,
    priority: i64,
    convention: usize,
    transform: usize,
}

/// How to read the spans whose attribute keys are one given sequence (normalize's `_Plan`).
struct Plan {
    reads: Vec<(usize, Vec<Source>)>, // field -> sources, highest priority first
    markers: Vec<(usize, usize)>,     // (attribute, marker set)
    present: Py<PyFrozenSet>,
}

const MAX_KEYS: usize = 4096;
const MAX_PLANS: usize = 1024;
const MAX_PLANNED_KEYS: usize = 64;
const MAX_CACHED: usize = 1024;

/// The convention tables, as handed over.
struct Tables {
    entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    transforms: Vec<Transform>,
    conventions: Vec<Py<PyString>>,
    marker_keys: HashMap<String, usize>,
    markers: Vec<FastSet<String>>,
    presentable: HashSet<String>,
    chunk_events: FastSet<Vec<u8>>,
}

/// Interned keys and the plans of key sequences (bounded: cleared together when full).
struct Plans {
    ids: FastMap<Box<[u8]>, u32>, // looked up per attribute of every span
    keys: Vec<KeyInfo>,
    plans: FastMap<Vec<u32>, Option<Arc<Plan>>>,
}

/// The text fields' values seen before: one interned str per distinct value (bounded;
/// fallback buffers names per trace and interns them: already interned, that is free).
struct Strings {
    names: FastMap<String, Py<PyString>>,
    empty: Py<PyString>,
}

#[pyclass(module = "llm_pipeline_native")]
pub struct CallReader {
    tables: Tables,
    plans: Plans,
    strings: Strings,
}

fn transform_of(spec: &Bound<'_, PyTuple>) -> PyResult<Transform> {
    let kind: String = spec.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "str" => Transform::Str,
        "int" => Transform::Int,
        "float" => Transform::Float,
        "bool" => Transform::Bool,
        "map" => Transform::Map {
            table: spec.get_item(1)?.cast_into::<PyDict>()?.extract()?,
            keep: spec.get_item(2)?.extract()?,
        },
        "const" => Transform::Const(spec.get_item(1)?.extract()?),
        "prefix" => Transform::Prefix,
        "python" => Transform::Python,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown transform {other:?}"
            )))
        }
    })
}

/// One span's fields besides its attributes.
struct Head {
    trace_id: (usize, usize),
    span_id: (usize, usize),
    parent_span_id: (usize, usize),
    kind: i32,
    start: u64,
    end: u64,
    status_code: i32,
    content: (usize, usize), // the span message's bytes
}

fn head_and_attributes(
    d: &[u8],
    start: usize,
    end: usize,
    kvs: &mut Vec<(usize, usize)>,
    events: &mut Vec<(usize, usize)>,
) -> wire::Result<Head> {
    let mut h = Head {
        trace_id: (start, start),
        span_id: (start, start),
        parent_span_id: (start, start),
        kind: 0,
        start: 0,
        end: 0,
        status_code: 0,
        content: (start, end),
    };
    kvs.clear();
    events.clear();
    wire::each_field(d, start, end, |field, wt, v, a, b| {
        match (field, wt) {
            (1, 2) => h.trace_id = (a, b),
            (2, 2) => h.span_id = (a, b),
            (4, 2) => h.parent_span_id = (a, b),
            (6, 0) => h.kind = v as i32, // an open enum: the low 32 bits, as int32
            (7, 1) => h.start = v,
            (8, 1) => h.end = v,
            (9, 2) => kvs.push((a, b)),
            (11, 2) => events.push((a, b)),
            (15, 2) => wire::each_field(d, a, b, |f2, w2, c, _, _| {
                if f2 == 3 && w2 == 0 {
                    h.status_code = c as i32;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(h)
}

/// Calls `f(flat scope index, index in its scope, start, end)` for every span of a traces
/// request; returns how many scope_spans it has.
fn each_span(
    d: &[u8],
    mut f: impl FnMut(usize, usize, usize, usize) -> wire::Result<()>,
) -> wire::Result<usize> {
    let mut flat = 0usize;
    wire::each_len_field(d, 0, d.len(), |f1, a, b| {
        if f1 != 1 {
            return Ok(());
        }
        wire::each_len_field(d, a, b, |f2, c, e| {
            if f2 != 2 {
                return Ok(());
            }
            let mut j = 0usize;
            wire::each_len_field(d, c, e, |f3, g, h| {
                if f3 == 2 {
                    f(flat, j, g, h)?;
                    j += 1;
                }
                Ok(())
            })?;
            flat += 1;
            Ok(())
        })
    })?;
    Ok(flat)
}

#[allow(clippy::large_enum_variant)] // one per span, on the stack
enum Outcome<'a> {
    Python,
    Read([Option<Got<'a>>; 18], usize, bool), // fields, convention, marked
}

/// (flat scope index, index in the scope, the raw fields or None) per span read.
type Found<'py> = Vec<(usize, usize, Option<Bound<'py, PyTuple>>)>;

#[pymethods]
impl CallReader {
    /// `table`: (key, field, priority, convention, transform spec) per attribute key;
    /// `markers`: (key, values) that mark a span as an LLM call; `presentable`: the keys a
    /// call's `present` set keeps; `chunk_events`: the span event names that mark a streamed
    /// chunk.
    #[new]
    fn new(
        py: Python<'_>,
        table: Vec<(String, String, i64, String, Bound<'_, PyTuple>)>,
        markers: Vec<(String, Vec<String>)>,
        presentable: Vec<String>,
        chunk_events: Vec<String>,
    ) -> PyResult<Self> {
        let mut t = Tables {
            entries: Vec::new(),
            by_key: HashMap::new(),
            transforms: Vec::new(),
            conventions: Vec::new(),
            marker_keys: HashMap::new(),
            markers: Vec::new(),
            presentable: presentable.into_iter().collect(),
            chunk_events: chunk_events.into_iter().map(String::into_bytes).collect(),
        };
        let mut conventions: HashMap<String, usize> = HashMap::new();
        for (key, field, priority, convention, spec) in table {
            let field = FIELD_NAMES
                .iter()
                .position(|f| *f == field)
                .ok_or_else(|| PyValueError::new_err(format!("unknown field {field:?}")))?;
            let n = conventions.len();
            let conv = *conventions.entry(convention.clone()).or_insert(n);
            if conv == t.conventions.len() {
                t.conventions.push(PyString::new(py, &convention).unbind());
            }
            t.transforms.push(transform_of(&spec)?);
            t.by_key.insert(key, t.entries.len());
            t.entries.push(Entry {
                field,
                priority,
                convention: conv,
                transform: t.transforms.len() - 1,
            });
        }
        for (key, values) in markers {
            t.marker_keys.insert(key, t.markers.len());
            t.markers.push(values.into_iter().collect());
        }
        Ok(CallReader {
            tables: t,
            plans: Plans {
                ids: FastMap::default(),
                keys: Vec::new(),
                plans: FastMap::default(),
            },
            strings: Strings {
                names: FastMap::default(),
                empty: PyString::new(py, "").unbind(),
            },
        })
    }

    /// For each span of a traces request whose keys could make it a model call (one that the
    /// tables read a model or a server latency from), in parse order: (flat scope index, index
    /// in the scope, its raw fields (`CALL_FIELDS`), or None when Python must read the span).
    /// `scopes`: (service name, scope name) per scope_spans, in order.
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        scopes: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    ) -> PyResult<Found<'py>> {
        let err = |e: wire::Error| PyValueError::new_err(e.0);
        let mut spans: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(128);
        let n = each_span(data, |s, j, a, b| {
            spans.push((s, j, a, b));
            Ok(())
        })
        .map_err(err)?;
        if n != scopes.len() {
            return Err(PyValueError::new_err(
                "scope count differs from the parsed request",
            ));
        }
        let mut out = Vec::new();
        let mut kvs: Vec<(usize, usize)> = Vec::with_capacity(32);
        let mut events: Vec<(usize, usize)> = Vec::with_capacity(16);
        let mut key_ids: Vec<u32> = Vec::with_capacity(32);
        for (s, j, a, b) in spans {
            let head = head_and_attributes(data, a, b, &mut kvs, &mut events).map_err(err)?;
            key_ids.clear();
            self.plans.make_room(kvs.len());
            for &(ka, kb) in &kvs {
                let (x, y) = wire_key(data, ka, kb).map_err(err)?;
                key_ids.push(self.plans.key_id(&self.tables, &data[x..y])?);
            }
            let Some(plan) = self.plans.plan(py, &self.tables, &key_ids)? else {
                continue;
            };
            match resolve(&self.tables, &plan, data, &kvs).map_err(err)? {
                Outcome::Python => out.push((s, j, None)),
                Outcome::Read(fields, conv, marked) => {
                    let (service, scope) = &scopes[s];
                    let raw = self.strings.raw(
                        py,
                        &self.tables,
                        &plan,
                        &head,
                        &events,
                        data,
                        (&fields, conv, marked),
                        (service, scope),
                    )?;
                    out.push((s, j, raw));
                }
            }
        }
        Ok(out)
    }

    /// Distinct keys and plans held.
    fn sizes(&self) -> (usize, usize) {
        (self.plans.keys.len(), self.plans.plans.len())
    }
}

fn wire_key(d: &[u8], a: usize, b: usize) -> wire::Result<(usize, usize)> {
    // The usual KeyValue: key (field 1) then value (field 2), each once, short lengths.
    if b - a >= 2 && d[a] == 0x0a && d[a + 1] < 0x80 {
        let key = (a + 2, a + 2 + usize::from(d[a + 1]));
        if key.1 == b {
            return Ok(key);
        }
        if key.1 < b && d[key.1] == 0x12 {
            let mut p = key.1 + 1;
            let n = wire::varint(d, &mut p, b)?;
            if usize::try_from(n).is_ok_and(|n| n == b - p) {
                return Ok(key);
            }
        }
    }
    let mut key = (a, a);
    wire::each_len_field(d, a, b, |f, k, l| {
        if f == 1 {
            key = (k, l);
        }
        Ok(())
    })?;
    Ok(key)
}

impl Plans {
    /// Before a span's keys are interned: a flood of unique keys must not grow memory, so
    /// when the span's keys might not fit, all go (plans hold key ids: they go too). Never
    /// within a span, whose earlier ids would point at other keys.
    fn make_room(&mut self, keys: usize) {
        if self.keys.len() + keys > MAX_KEYS {
            self.ids.clear();
            self.keys.clear();
            self.plans.clear();
        }
    }

    fn key_id(&mut self, t: &Tables, raw: &[u8]) -> PyResult<u32> {
        if let Some(&id) = self.ids.get(raw) {
            return Ok(id);
        }
        let text =
            std::str::from_utf8(raw).map_err(|_| PyValueError::new_err("key is not UTF-8"))?;
        let id = self.keys.len() as u32;
        self.keys.push(KeyInfo {
            text: text.into(),
            entry: t.by_key.get(text).copied(),
            marker: t.marker_keys.get(text).copied(),
            present: t.presentable.contains(text),
        });
        self.ids.insert(raw.into(), id);
        Ok(id)
    }

    fn plan(&mut self, py: Python<'_>, t: &Tables, key_ids: &[u32]) -> PyResult<Option<Arc<Plan>>> {
        if let Some(p) = self.plans.get(key_ids) {
            return Ok(p.clone());
        }
        let plan = self.make_plan(py, t, key_ids)?.map(Arc::new);
        if key_ids.len() <= MAX_PLANNED_KEYS {
            if self.plans.len() >= MAX_PLANS {
                self.plans.clear();
            }
            self.plans.insert(key_ids.to_vec(), plan.clone());
        }
        Ok(plan)
    }

    fn make_plan(&self, py: Python<'_>, t: &Tables, key_ids: &[u32]) -> PyResult<Option<Plan>> {
        let mut reads: Vec<(usize, Vec<Source>)> = Vec::new();
        for (i, &id) in key_ids.iter().enumerate() {
            if let Some(e) = self.keys[id as usize].entry {
                let e = &t.entries[e];
                let src = Source {
                    attr: i,
                    priority: e.priority,
                    convention: e.convention,
                    transform: e.transform,
                };
                match reads.iter_mut().find(|(f, _)| *f == e.field) {
                    Some((_, found)) => found.push(src),
                    None => reads.push((e.field, vec![src])),
                }
            }
        }
        if !reads.iter().any(|(f, _)| QUALIFYING.contains(f)) {
            return Ok(None);
        }
        for (_, found) in reads.iter_mut() {
            found.sort_by_key(|s| -s.priority); // stable: attribute order among equals
        }
        let markers = key_ids
            .iter()
            .enumerate()
            .filter_map(|(i, &id)| self.keys[id as usize].marker.map(|m| (i, m)))
            .collect();
        let present: Vec<&str> = key_ids
            .iter()
            .map(|&id| &self.keys[id as usize])
            .filter(|k| k.present)
            .map(|k| &*k.text)
            .collect();
        let present = PyFrozenSet::new(py, present)?.unbind();
        Ok(Some(Plan {
            reads,
            markers,
            present,
        }))
    }
}

/// The span's fields by the plan (normalize's `_fields_from_message`).
fn resolve<'a>(
    t: &'a Tables,
    plan: &Plan,
    d: &'a [u8],
    kvs: &[(usize, usize)],
) -> wire::Result<Outcome<'a>> {
    let mut fields: [Option<Got<'a>>; 18] = [None; 18];
    let mut convention = usize::MAX;
    let mut best = i64::MIN;
    for (field, sources) in &plan.reads {
        for src in sources {
            let (a, b) = kvs[src.attr];
            let v = wire::key_value(d, a, b)?;
            match apply(&t.transforms[src.transform], &v, d) {
                Step::Python => return Ok(Outcome::Python),
                Step::Absent => continue,
                Step::Got(g) => {
                    let kind = match g {
                        Got::Text(_) => Kind::Text,
                        Got::Int(_) => Kind::Int,
                        Got::Float(_) => Kind::Float,
                        Got::Bool(_) => Kind::Bool,
                    };
                    if kind != kind_of(*field) {
                        return Ok(Outcome::Python); // a table this reader does not expect
                    }
                    fields[*field] = Some(g);
                    if src.priority > best && CONVENTION_FIELDS.contains(field) {
                        best = src.priority;
                        convention = src.convention;
                    }
                    break;
                }
            }
        }
    }
    let mut marked = false;
    for &(attr, set) in &plan.markers {
        let (a, b) = kvs[attr];
        match wire::key_value(d, a, b)? {
            Value::Str(x, y) if text(d, x, y).is_some_and(|s| t.markers[set].contains(s)) => {
                marked = true;
            }
            Value::Complex => return Ok(Outcome::Python),
            _ => {}
        }
    }
    Ok(Outcome::Read(fields, convention, marked))
}

/// The times of the span events named as a streamed chunk at or after the span's start,
/// ascending (the ttft processor's `chunk_times` over the parsed events).
fn chunk_times(
    d: &[u8],
    events: &[(usize, usize)],
    start: u64,
    names: &FastSet<Vec<u8>>,
) -> wire::Result<Vec<u64>> {
    let mut times = Vec::new();
    for &(a, b) in events {
        let (mut time, mut name) = (0u64, (a, a));
        wire::each_field(d, a, b, |f, wt, v, x, y| {
            match (f, wt) {
                (1, 1) => time = v,
                (2, 2) => name = (x, y),
                _ => {}
            }
            Ok(())
        })?;
        if time >= start && names.contains(&d[name.0..name.1]) {
            times.push(time);
        }
    }
    times.sort_unstable();
    Ok(times)
}

enum Exception<'a> {
    Type(&'a str),
    None,
    Python,
}

/// The `exception.type` of the first `exception` event that has one as a non-empty string
/// (normalize's `_error_type` over the parsed events).
fn exception_type<'a>(d: &'a [u8], events: &[(usize, usize)]) -> wire::Result<Exception<'a>> {
    for &(a, b) in events {
        let mut name = (a, a);
        let mut attrs: Vec<(usize, usize)> = Vec::new();
        wire::each_len_field(d, a, b, |f, x, y| {
            match f {
                2 => name = (x, y),
                3 => attrs.push((x, y)),
                _ => {}
            }
            Ok(())
        })?;
        if &d[name.0..name.1] != b"exception" {
            continue;
        }
        for (x, y) in attrs {
            let (k0, k1) = wire_key(d, x, y)?;
            if &d[k0..k1] != b"exception.type" {
                continue;
            }
            match wire::key_value(d, x, y)? {
                Value::Str(p, q) if q > p => {
                    return Ok(match text(d, p, q) {
                        Some(t) => Exception::Type(t),
                        None => Exception::Python,
                    })
                }
                Value::Complex => return Ok(Exception::Python),
                _ => {}
            }
        }
    }
    Ok(Exception::None)
}

impl Strings {
    /// One interned str per distinct value (bounded).
    fn name<'py>(&mut self, py: Python<'py>, x: &str) -> Bound<'py, PyAny> {
        if let Some(v) = self.names.get(x) {
            return v.bind(py).clone().into_any();
        }
        let v = PyString::intern(py, x);
        if self.names.len() >= MAX_CACHED {
            self.names.clear();
        }
        self.names.insert(x.to_owned(), v.clone().unbind());
        v.into_any()
    }

    /// The span's raw fields (`CALL_FIELDS`), or None when an exception event's type is a
    /// value only the parser reads (a repeated value message).
    #[allow(clippy::too_many_arguments)]
    fn raw<'py>(
        &mut self,
        py: Python<'py>,
        t: &Tables,
        plan: &Plan,
        h: &Head,
        events: &[(usize, usize)],
        d: &[u8],
        (fields, convention, marked): (&[Option<Got<'_>>; 18], usize, bool),
        (service, scope): (&Bound<'py, PyAny>, &Bound<'py, PyAny>),
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let wire_err = |e: wire::Error| PyValueError::new_err(e.0);
        // Only a failed span's exception names its error (normalize reads it no further).
        let exception = if h.status_code == 2 {
            match exception_type(d, events).map_err(wire_err)? {
                Exception::Type(raw) => Some(raw),
                Exception::None => None,
                Exception::Python => return Ok(None),
            }
        } else {
            None
        };
        // What the ttft processor would look for in the events: read while the bytes are at
        // hand (normalize drops them for a server span, whose chunks are not a client's).
        let chunks = chunk_times(d, events, h.start, &t.chunk_events).map_err(wire_err)?;
        let none = || py.None().into_bound(py);
        let bytes = |(a, b): (usize, usize)| PyBytes::new(py, &d[a..b]).into_any();
        let convention = match convention {
            usize::MAX => self.empty.bind(py).clone().into_any(),
            c => t.conventions[c].bind(py).clone().into_any(),
        };
        let exception = match exception {
            Some(x) => PyString::new(py, x).into_any(),
            None => none(),
        };
        let mut items: Vec<Bound<'py, PyAny>> =
            Vec::with_capacity(HEAD_FIELDS.len() + FIELD_NAMES.len());
        items.extend([
            service.clone(),
            scope.clone(),
            convention,
            bytes(h.trace_id),
            bytes(h.span_id),
            bytes(h.parent_span_id),
            h.kind.into_pyobject(py)?.into_any(),
            h.start.into_pyobject(py)?.into_any(),
            h.end.into_pyobject(py)?.into_any(),
            h.status_code.into_pyobject(py)?.into_any(),
            exception,
            marked.into_pyobject(py)?.to_owned().into_any(),
            plan.present.bind(py).clone().into_any(),
            PyTuple::new(py, chunks)?.into_any(),
            h.content.into_pyobject(py)?.into_any(),
        ]);
        for (f, got) in fields.iter().enumerate() {
            items.push(match *got {
                None => none(),
                // names repeat call after call: one str each; other text is made each time
                Some(Got::Text(x))
                    if matches!(f, OPERATION | PROVIDER | REQUEST_MODEL | RESPONSE_MODEL) =>
                {
                    self.name(py, x)
                }
                Some(Got::Text(x)) => PyString::new(py, x).into_any(),
                Some(Got::Int(i)) => i.into_pyobject(py)?.into_any(),
                Some(Got::Float(x)) => x.into_pyobject(py)?.into_any(),
                Some(Got::Bool(b)) => b.into_pyobject(py)?.to_owned().into_any(),
            });
        }
        debug_assert_eq!(items.len(), HEAD_FIELDS.len() + FIELD_NAMES.len());
        Ok(Some(PyTuple::new(py, items)?))
    }
}
