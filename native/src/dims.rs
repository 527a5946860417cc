//! Attribution's dimension values, read from the received bytes of a traces request and
//! inherited through each span's ancestors in the same request (the Python twin:
//! `pipeline.processors.ancestry.PySpanIndex`).
//!
//! A slot (one dimension, or the conversation id) has ordered sources, span or resource
//! attribute keys: its value on a span is the first source with a string, int or bool value
//! (int in decimal, bool as true/false; an empty string, a double, bytes, an array or a kvlist
//! is no value). A span's key given twice: the last one counts, as in a dict.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::wire::{self, any_value, each_len_field, Value};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

const MAX_DEPTH: usize = 256;
// An agent or workflow run: its name starts with one, or its gen_ai.operation.name is one
// (pipeline.processors.rollup.agent_name, which this follows).
const AGENT_PREFIXES: [&str; 2] = ["invoke_agent", "invoke_workflow"];
const OPERATION_KEY: &[u8] = b"gen_ai.operation.name";
const AGENT_NAME_KEY: &[u8] = b"gen_ai.agent.name"; // parent links followed at most: a cycle in bad data must end

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Val {
    Absent,
    Str(u32, u32),
    Int(i64),
    Bool(bool),
}

impl Val {
    fn of(v: Value) -> Val {
        match v {
            Value::Str(a, b) if b > a => Val::Str(a as u32, b as u32),
            Value::Int(i) => Val::Int(i),
            Value::Bool(x) => Val::Bool(x),
            _ => Val::Absent,
        }
    }
}

/// A KeyValue's value: a value message given twice is merged by the parser, so the last
/// member set in any of them wins (a message member, array or kvlist, is no value here).
fn kv_value(d: &[u8], start: usize, end: usize) -> Result<Val, wire::Error> {
    let mut out = Val::Absent;
    each_len_field(d, start, end, |field, a, b| {
        if field == 2 {
            match any_value(d, a, b, false)? {
                Value::Unset => {}
                v => out = Val::of(v),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// The slots' sources: keys to look for and, per slot, (resource?, key index) in order.
#[pyclass(module = "llm_pipeline_native", frozen)]
pub struct DimensionReader {
    span_keys: Vec<Vec<u8>>,
    // any span key, as bytes anywhere: a span whose bytes hold none has no span value to read
    any_span_key: Option<regex::bytes::Regex>,
    // with `agents`: the agent run markers (a span whose bytes hold none is no agent run)
    agent_marks: Option<regex::bytes::Regex>,
    resource_keys: Vec<Vec<u8>>,
    slots: Vec<Vec<(bool, usize)>>,
}

fn key_index(keys: &mut Vec<Vec<u8>>, key: &str) -> usize {
    match keys.iter().position(|k| k == key.as_bytes()) {
        Some(i) => i,
        None => {
            keys.push(key.as_bytes().to_vec());
            keys.len() - 1
        }
    }
}

/// Where `key` (d[a..b]) is among `keys`.
#[inline]
fn find(keys: &[Vec<u8>], key: &[u8]) -> Option<usize> {
    keys.iter().position(|k| k.as_slice() == key)
}

/// Which of `keys` the KeyValue d[a..b] has (its last key field, as the parser reads it).
fn kv_key(d: &[u8], a: usize, b: usize, keys: &[Vec<u8>]) -> Result<Option<usize>, wire::Error> {
    let mut which = None;
    each_len_field(d, a, b, |f, c, e| {
        if f == 1 {
            which = find(keys, &d[c..e]);
        }
        Ok(())
    })?;
    Ok(which)
}

/// Where the keys' bytes were found, as non-overlapping (start, end) in order. Any occurrence
/// of a key overlaps one of them (a search resumes after each match), so a range that
/// overlaps none holds no key.
struct Matches(Vec<(usize, usize)>);

impl Matches {
    fn overlap(&self, a: usize, b: usize) -> bool {
        let m = &self.0;
        let i = m.partition_point(|&(_, end)| end <= a);
        i < m.len() && m[i].0 < b
    }
}

/// The last value of each of `keys` among a resource's attributes, d[start..end].
fn resource_attrs(
    d: &[u8],
    start: usize,
    end: usize,
    keys: &[Vec<u8>],
    out: &mut [Val],
) -> Result<(), wire::Error> {
    each_len_field(d, start, end, |f, a, b| {
        if f == 1 {
            if let Some(i) = kv_key(d, a, b, keys)? {
                out[i] = kv_value(d, a, b)?;
            }
        }
        Ok(())
    })
}

fn id(d: &[u8], (a, b): (usize, usize), n: usize) -> Result<u128, wire::Error> {
    if b - a != n {
        return Err(wire::Error("an id of another length"));
    }
    let mut x = [0u8; 16];
    x[..n].copy_from_slice(&d[a..b]);
    Ok(u128::from_le_bytes(x))
}

#[pymethods]
impl DimensionReader {
    /// `slots`: per slot, its sources in order, ("span" | "resource", attribute key);
    /// `agents`: read each span's agent run name too (`SpanIndex.nodes`).
    #[new]
    #[pyo3(signature = (slots, agents = false))]
    fn new(slots: Vec<Vec<(String, String)>>, agents: bool) -> PyResult<Self> {
        let (mut span_keys, mut resource_keys) = (Vec::new(), Vec::new());
        let mut parsed = Vec::with_capacity(slots.len());
        for sources in slots {
            let mut s = Vec::with_capacity(sources.len());
            for (kind, key) in sources {
                match kind.as_str() {
                    "span" => s.push((false, key_index(&mut span_keys, &key))),
                    "resource" => s.push((true, key_index(&mut resource_keys, &key))),
                    _ => return Err(PyValueError::new_err(format!("source kind {kind:?}"))),
                }
            }
            parsed.push(s);
        }
        let any_span_key = if span_keys.is_empty() {
            None
        } else {
            let alternatives: Vec<String> = span_keys
                .iter()
                .map(|k| regex::escape(std::str::from_utf8(k).unwrap_or_default()))
                .collect();
            Some(
                regex::bytes::Regex::new(&alternatives.join("|"))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        };
        let agent_marks = if agents {
            Some(
                regex::bytes::Regex::new(&AGENT_PREFIXES.join("|"))
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(DimensionReader {
            span_keys,
            any_span_key,
            agent_marks,
            resource_keys,
            slots: parsed,
        })
    }

    /// The spans of a traces request (bytes the parser accepted, ids checked), indexed.
    fn index(&self, data: Bound<'_, PyBytes>) -> PyResult<SpanIndex> {
        self.build(data).map_err(|e| PyValueError::new_err(e.0))
    }
}

impl DimensionReader {
    fn build(&self, data: Bound<'_, PyBytes>) -> Result<SpanIndex, wire::Error> {
        let d = data.as_bytes();
        let n = self.slots.len();
        let (ns, nr) = (self.span_keys.len(), self.resource_keys.len());
        let mut ix = SpanIndex {
            data: data.clone().unbind(),
            n,
            ids: FastMap::with_capacity_and_hasher(128, Default::default()),
            spans: Vec::with_capacity(128),
            values: Vec::with_capacity(128 * n),
            traces: Vec::new(),
        };
        let mut resource = vec![Val::Absent; nr];
        let mut own = vec![Val::Absent; ns];
        let mut bare = vec![Val::Absent; n]; // a span without any span key: its resource's values
        let matches = Matches(match &self.any_span_key {
            Some(re) => re.find_iter(d).map(|m| (m.start(), m.end())).collect(),
            None => Vec::new(),
        });
        let marks = Matches(match &self.agent_marks {
            Some(re) => re.find_iter(d).map(|m| (m.start(), m.end())).collect(),
            None => Vec::new(),
        });
        let mut r = 0u32;
        each_len_field(d, 0, d.len(), |field, rs, re| {
            if field != 1 {
                return Ok(());
            }
            r += 1;
            let mut sc = 0u32;
            resource.fill(Val::Absent);
            each_len_field(d, rs, re, |f, a, b| {
                if f == 1 && nr > 0 {
                    resource_attrs(d, a, b, &self.resource_keys, &mut resource)?;
                }
                Ok(())
            })?;
            self.pick(&[], &resource, &mut bare);
            each_len_field(d, rs, re, |f, a, b| {
                if f != 2 {
                    return Ok(());
                }
                sc += 1;
                let mut item = 0u32;
                each_len_field(d, a, b, |f2, c, e| {
                    if f2 != 2 {
                        return Ok(());
                    }
                    item += 1;
                    // one walk of the span's fields: its ids, and its attributes where a key
                    // was found
                    let mut ids = [(c, c); 3];
                    let mut name = (c, c);
                    let mut found = false;
                    own.fill(Val::Absent);
                    let scan = matches.overlap(c, e);
                    each_len_field(d, c, e, |f3, x, y| {
                        match f3 {
                            1 => ids[0] = (x, y),
                            2 => ids[1] = (x, y),
                            4 => ids[2] = (x, y),
                            5 => name = (x, y),
                            9 if scan && matches.overlap(x, y) => {
                                if let Some(i) = kv_key(d, x, y, &self.span_keys)? {
                                    own[i] = kv_value(d, x, y)?;
                                    found = true;
                                }
                            }
                            _ => {}
                        }
                        Ok(())
                    })?;
                    let tid = id(d, ids[0], 16)?;
                    let sid = id(d, ids[1], 8)? as u64;
                    let parent = if ids[2].1 > ids[2].0 {
                        Some(id(d, ids[2], 8)? as u64)
                    } else {
                        None
                    };
                    let at = ix.spans.len();
                    if found {
                        let mut v = vec![Val::Absent; n];
                        self.pick(&own, &resource, &mut v);
                        ix.values.extend_from_slice(&v);
                    } else {
                        ix.values.extend_from_slice(&bare);
                    }
                    let agent = if marks.overlap(c, e) {
                        agent_name(d, c, e, name)?
                    } else {
                        None
                    };
                    ix.spans.push(Span {
                        tid,
                        parent,
                        tid_at: ids[0].0 as u32,
                        sid_at: ids[1].0 as u32,
                        root: parent.is_none(),
                        name: (name.0 as u32, name.1 as u32),
                        range: (c as u32, e as u32),
                        at: (r - 1, sc - 1, item - 1),
                        agent,
                    });
                    ix.ids.insert((tid, sid), at as u32);
                    Ok(())
                })
            })
        })?;
        // distinct trace ids, each with whether its root span is here
        let mut seen: FastMap<u128, usize> =
            FastMap::with_capacity_and_hasher(32, Default::default());
        for s in &ix.spans {
            match seen.get(&s.tid) {
                Some(&i) => ix.traces[i].1 |= s.root,
                None => {
                    seen.insert(s.tid, ix.traces.len());
                    ix.traces.push((s.tid_at, s.root));
                }
            }
        }
        Ok(ix)
    }

    /// Each slot's value from the span's keys (`own`) or its resource's.
    fn pick(&self, own: &[Val], resource: &[Val], out: &mut [Val]) {
        for (slot, sources) in out.iter_mut().zip(&self.slots) {
            *slot = Val::Absent;
            for &(is_resource, k) in sources {
                let v = if is_resource {
                    resource[k]
                } else {
                    own.get(k).copied().unwrap_or(Val::Absent)
                };
                if !matches!(v, Val::Absent) {
                    *slot = v;
                    break;
                }
            }
        }
    }
}

struct Span {
    tid: u128,
    parent: Option<u64>,
    tid_at: u32, // where its trace id lies in the bytes
    sid_at: u32,
    root: bool,
    name: (u32, u32),
    range: (u32, u32),
    at: (u32, u32, u32), // resource, scope and span index in the parsed request
    agent: Option<(u32, u32)>, // an agent run's name (empty: unnamed), as bytes
}

/// The agent run name of the span d[c..e] (name at `name`), as `rollup.agent_name` reads
/// it: None when it is no agent run. Keys given twice: the last counts; a value that is not
/// a string is "".
fn agent_name(
    d: &[u8],
    c: usize,
    e: usize,
    name: (usize, usize),
) -> Result<Option<(u32, u32)>, wire::Error> {
    let (mut operation, mut named) = ((0, 0), (0, 0));
    each_len_field(d, c, e, |f, x, y| {
        if f == 9 {
            let key = kv_key(d, x, y, &[OPERATION_KEY.to_vec(), AGENT_NAME_KEY.to_vec()])?;
            if let Some(k) = key {
                let v = match kv_value(d, x, y)? {
                    Val::Str(a, b) => (a as usize, b as usize),
                    _ => (0, 0),
                };
                if k == 0 {
                    operation = v;
                } else {
                    named = v;
                }
            }
        }
        Ok(())
    })?;
    let text = &d[name.0..name.1];
    let op = &d[operation.0..operation.1];
    let range = |r: (usize, usize)| Some((r.0 as u32, r.1 as u32));
    if AGENT_PREFIXES
        .iter()
        .any(|p| text.starts_with(p.as_bytes()))
    {
        if named.1 > named.0 {
            return Ok(range(named));
        }
        // the name's words after the first
        return Ok(match text.iter().position(|&b| b == b' ') {
            Some(i) => range((name.0 + i + 1, name.1)),
            None => range((name.0, name.0)),
        });
    }
    if AGENT_PREFIXES.iter().any(|p| op == p.as_bytes()) {
        return Ok(range(named));
    }
    Ok(None)
}

/// One request's spans: each one's own slot values and parent, for `resolve`.
#[pyclass(module = "llm_pipeline_native")]
pub struct SpanIndex {
    data: Py<PyBytes>,
    n: usize,
    ids: FastMap<(u128, u64), u32>,
    spans: Vec<Span>,
    values: Vec<Val>, // n per span
    traces: Vec<(u32, bool)>,
}

impl SpanIndex {
    /// Fill `vals` (the span at `at`'s own values) from its ancestors: the first one awaited.
    fn inherit(&self, tid: u128, at: usize, vals: &mut [Val]) -> Option<u64> {
        let n = self.n;
        vals.copy_from_slice(&self.values[at * n..at * n + n]);
        let mut missing = vals.iter().filter(|v| matches!(v, Val::Absent)).count();
        let mut parent = self.spans[at].parent;
        let mut depth = 0;
        while let Some(p) = parent {
            if missing == 0 || depth >= MAX_DEPTH {
                break;
            }
            let Some(&i) = self.ids.get(&(tid, p)) else {
                return Some(p); // awaited: not in this request
            };
            let i = i as usize;
            for (v, a) in vals.iter_mut().zip(&self.values[i * n..i * n + n]) {
                if matches!(v, Val::Absent) && !matches!(a, Val::Absent) {
                    *v = *a;
                    missing -= 1;
                }
            }
            parent = self.spans[i].parent;
            depth += 1;
        }
        None
    }

    /// What a value's text is made from: equal keys, equal texts (a Str by its bytes, wherever
    /// in the request they lie), so each distinct text is checked and made a str once.
    fn text_key<'a>(d: &'a [u8], v: Val) -> TextKey<'a> {
        match v {
            Val::Absent => TextKey::Absent,
            Val::Str(a, b) => TextKey::Str(&d[a as usize..b as usize]),
            Val::Int(x) => TextKey::Int(x),
            Val::Bool(x) => TextKey::Bool(x),
        }
    }

    /// The text of a value ("" for none).
    fn text<'a>(d: &'a [u8], v: Val) -> PyResult<std::borrow::Cow<'a, str>> {
        Ok(match v {
            Val::Absent => "".into(),
            Val::Str(a, b) => std::str::from_utf8(&d[a as usize..b as usize])
                .map_err(|_| PyValueError::new_err("not UTF-8"))?
                .into(),
            Val::Int(x) => x.to_string().into(),
            Val::Bool(x) => (if x { "true" } else { "false" }).into(),
        })
    }

    fn resolved<'py>(
        &self,
        py: Python<'py>,
        wanted: &[(Bound<'py, PyBytes>, Bound<'py, PyBytes>)],
        weights: Option<&[f64]>,
        labelled: usize,
    ) -> PyResult<(Bound<'py, PyList>, Vec<Bound<'py, PyDict>>)> {
        let d = self.data.bind(py).as_bytes();
        let n = self.n;
        let out = PyList::empty(py);
        let mut vals = vec![Val::Absent; n];
        let empty = PyBytes::new(py, b"");
        let none = PyString::intern(py, "");
        // One str per distinct text, and one values tuple per distinct combination of the
        // slots' values (calls under one request share theirs): what a combination's calls
        // weigh is summed first, then added to each of its values' sums.
        let room = wanted.len().min(64);
        let mut texts: FastMap<TextKey<'_>, Bound<'py, PyString>> =
            FastMap::with_capacity_and_hasher(room, Default::default());
        let mut by_text: FastMap<String, Bound<'py, PyString>> =
            FastMap::with_capacity_and_hasher(room, Default::default());
        let mut combo_at: FastMap<Vec<Val>, usize> =
            FastMap::with_capacity_and_hasher(room, Default::default());
        // by the strs' addresses
        let mut by_texts: FastMap<Vec<usize>, usize> =
            FastMap::with_capacity_and_hasher(room, Default::default());
        let mut combos: Vec<Combo<'py>> = Vec::with_capacity(room);
        let mut weighed: Vec<usize> = Vec::new(); // combos with weight, in the order they got it
        for (k, (t, s)) in wanted.iter().enumerate() {
            let tid = to_id(t.as_bytes(), 16)?;
            let sid = to_id(s.as_bytes(), 8)? as u64;
            let Some(&at) = self.ids.get(&(tid, sid)) else {
                out.append(py.None())?;
                continue;
            };
            let gap = self.inherit(tid, at as usize, &mut vals);
            let c = match combo_at.get(vals.as_slice()) {
                Some(&c) => c,
                None => {
                    let mut items = Vec::with_capacity(n);
                    for &v in &vals {
                        let key = Self::text_key(d, v);
                        items.push(if matches!(key, TextKey::Absent) {
                            none.clone()
                        } else if let Some(s) = texts.get(&key) {
                            s.clone()
                        } else {
                            // one str per text: an int and a string of the same digits too
                            let text = Self::text(d, v)?;
                            let s = match by_text.get(text.as_ref()) {
                                Some(s) => s.clone(),
                                None => {
                                    let s = PyString::new(py, &text);
                                    by_text.insert(text.into_owned(), s.clone());
                                    s
                                }
                            };
                            texts.insert(key, s.clone());
                            s
                        });
                    }
                    // the same texts read elsewhere in the bytes: the same combination
                    let key: Vec<usize> = items.iter().map(|s| s.as_ptr() as usize).collect();
                    let c = match by_texts.get(&key) {
                        Some(&c) => c,
                        None => {
                            let values = PyTuple::new(py, &items)?;
                            let pair = PyTuple::new(
                                py,
                                [values.clone().into_any(), empty.clone().into_any()],
                            )?;
                            by_texts.insert(key, combos.len());
                            combos.push(Combo {
                                items,
                                values,
                                pair,
                                weight: None,
                            });
                            combos.len() - 1
                        }
                    };
                    combo_at.insert(vals.clone(), c);
                    c
                }
            };
            let combo = &mut combos[c];
            match gap {
                None => {
                    out.append(&combo.pair)?;
                    if let Some(w) = weights {
                        match combo.weight.as_mut() {
                            Some(sum) => *sum += w[k],
                            None => {
                                combo.weight = Some(w[k]);
                                weighed.push(c);
                            }
                        }
                    }
                }
                Some(g) => {
                    let gap = PyBytes::new(py, &g.to_le_bytes());
                    let values = combo.values.clone().into_any();
                    out.append(PyTuple::new(py, [values, gap.into_any()])?)?;
                }
            }
        }
        let mut dicts = Vec::with_capacity(labelled);
        for slot in 0..labelled {
            // by the str's address: one str per distinct text (`texts`)
            let mut at: FastMap<usize, usize> = FastMap::default();
            let mut sums: Vec<(&Bound<'py, PyString>, f64)> = Vec::new();
            for &c in &weighed {
                let combo = &combos[c];
                if let Some(w) = combo.weight {
                    let key = &combo.items[slot];
                    match at.get(&(key.as_ptr() as usize)) {
                        Some(&j) => sums[j].1 += w,
                        None => {
                            at.insert(key.as_ptr() as usize, sums.len());
                            sums.push((key, w));
                        }
                    }
                }
            }
            let dict = PyDict::new(py);
            for (key, w) in sums {
                dict.set_item(key, w)?;
            }
            dicts.push(dict);
        }
        Ok((out, dicts))
    }
}

#[derive(PartialEq, Eq, Hash)]
enum TextKey<'a> {
    Absent,
    Str(&'a [u8]),
    Int(i64),
    Bool(bool),
}

/// One combination of slot values in a request: its str per slot, its values tuple, the
/// (values, b"") pair of its calls with no ancestor awaited, and what those weigh (None: none).
struct Combo<'py> {
    items: Vec<Bound<'py, PyString>>,
    values: Bound<'py, PyTuple>,
    pair: Bound<'py, PyTuple>,
    weight: Option<f64>,
}

fn to_id(b: &[u8], n: usize) -> PyResult<u128> {
    if b.len() != n {
        return Err(PyValueError::new_err("an id of another length"));
    }
    let mut x = [0u8; 16];
    x[..n].copy_from_slice(b);
    Ok(u128::from_le_bytes(x))
}

#[pymethods]
impl SpanIndex {
    /// Per (trace id, span id): None when the span is not in the request, else (its slot
    /// values, "" where none, filled from its nearest ancestors that have them; the span id
    /// of the first ancestor not in the request while a value is missing, else b"").
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        wanted: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>,
    ) -> PyResult<Bound<'py, PyList>> {
        Ok(self.resolved(py, &wanted, None, 0)?.0)
    }

    /// `resolve`, and per slot below `labelled`: value -> the sum of `weights` (one per
    /// wanted span, in order) of the spans found with no ancestor awaited.
    fn attribute<'py>(
        &self,
        py: Python<'py>,
        wanted: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>,
        weights: Vec<f64>,
        labelled: usize,
    ) -> PyResult<(Bound<'py, PyList>, Vec<Bound<'py, PyDict>>)> {
        if weights.len() != wanted.len() || labelled > self.n {
            return Err(PyValueError::new_err(
                "a weight per span, labelled <= slots",
            ));
        }
        self.resolved(py, &wanted, Some(&weights), labelled)
    }

    /// `attribute` for `calls` (objects with `trace_id`, `span_id` and `cost_usd`): each
    /// weighs its cost (0 when None) plus `floor`, read here rather than in two Python lists.
    fn attribute_calls<'py>(
        &self,
        py: Python<'py>,
        calls: &Bound<'py, PyList>,
        floor: f64,
        labelled: usize,
    ) -> PyResult<(Bound<'py, PyList>, Vec<Bound<'py, PyDict>>)> {
        if labelled > self.n {
            return Err(PyValueError::new_err("labelled <= slots"));
        }
        let (tid_key, sid_key) = (pyo3::intern!(py, "trace_id"), pyo3::intern!(py, "span_id"));
        let cost_key = pyo3::intern!(py, "cost_usd");
        let mut wanted = Vec::with_capacity(calls.len());
        let mut weights = Vec::with_capacity(calls.len());
        for call in calls.iter() {
            let tid = call.getattr(tid_key)?.cast_into::<PyBytes>()?;
            let sid = call.getattr(sid_key)?.cast_into::<PyBytes>()?;
            wanted.push((tid, sid));
            let cost = call.getattr(cost_key)?;
            let cost: f64 = if cost.is_none() { 0.0 } else { cost.extract()? };
            // as Python's `(cost or 0.0) + floor`: -0.0 is falsy there
            weights.push(if cost == 0.0 { 0.0 } else { cost } + floor);
        }
        self.resolved(py, &wanted, Some(&weights), labelled)
    }

    /// The spans of the traces in `among` (a dict or set keyed by trace id), in order: (trace
    /// id, span id, parent span id (b"" for a root), name (roots and agent runs only, else
    /// None), agent run name (None: not one), (start, end) in the bytes, (resource, scope,
    /// span) index in the parsed request). Agent names need `agents` on the reader.
    #[allow(clippy::type_complexity)]
    fn nodes<'py>(
        &self,
        py: Python<'py>,
        among: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let d = self.data.bind(py).as_bytes();
        let out = PyList::empty(py);
        let mut followed: FastMap<u128, (bool, Bound<'py, PyBytes>)> = FastMap::default();
        let empty = PyBytes::new(py, b"");
        let text = |(a, b): (u32, u32)| -> PyResult<Bound<'py, PyString>> {
            let s = std::str::from_utf8(&d[a as usize..b as usize])
                .map_err(|_| PyValueError::new_err("not UTF-8"))?;
            Ok(PyString::new(py, s))
        };
        for s in &self.spans {
            let (is_in, tid) = match followed.get(&s.tid) {
                Some((x, t)) => (*x, t.clone()),
                None => {
                    let at = s.tid_at as usize;
                    let t = PyBytes::new(py, &d[at..at + 16]);
                    let x = among.contains(&t)?;
                    followed.insert(s.tid, (x, t.clone()));
                    (x, t)
                }
            };
            if !is_in {
                continue;
            }
            let sid = PyBytes::new(py, &d[s.sid_at as usize..s.sid_at as usize + 8]);
            let parent = match s.parent {
                Some(p) => PyBytes::new(py, &p.to_le_bytes()),
                None => empty.clone(),
            };
            let name = if s.root || s.agent.is_some() {
                text(s.name)?.into_any()
            } else {
                py.None().into_bound(py)
            };
            let agent = match s.agent {
                Some(a) => text(a)?.into_any(),
                None => py.None().into_bound(py),
            };
            let items: [Bound<'py, PyAny>; 7] = [
                tid.into_any(),
                sid.into_any(),
                parent.into_any(),
                name,
                agent,
                (s.range.0, s.range.1).into_pyobject(py)?.into_any(),
                (s.at.0, s.at.1, s.at.2).into_pyobject(py)?.into_any(),
            ];
            out.append(PyTuple::new(py, items)?)?;
        }
        Ok(out)
    }

    /// Of the traces in `among` (a dict or set keyed by trace id), those with spans in the
    /// request: (trace id, whether its root span is here) each.
    fn present<'py>(
        &self,
        py: Python<'py>,
        among: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, bool)>> {
        let d = self.data.bind(py).as_bytes();
        let mut out = Vec::new();
        if let Ok(dict) = among.cast::<PyDict>() {
            if dict.is_empty() {
                return Ok(out);
            }
        }
        for &(at, root) in &self.traces {
            let tid = PyBytes::new(py, &d[at as usize..at as usize + 16]);
            if among.contains(&tid)? {
                out.push((tid, root));
            }
        }
        Ok(out)
    }
}

/// Set each call's `dimensions` from its `SpanIndex.resolve` result (`results`, in order) and
/// `labels` (per labelled slot, value -> label): a call not in the request gets each slot's
/// label of "" (its values are unknown), a call with an ancestor awaited is left alone (its
/// index is returned: the caller holds it). Per slot: the calls whose label is `other`.
/// The Python twin: `pipeline.processors.ancestry.py_label_calls`.
#[pyfunction]
pub fn label_calls<'py>(
    py: Python<'py>,
    calls: &Bound<'py, PyList>,
    results: &Bound<'py, PyList>,
    labels: Vec<Bound<'py, PyDict>>,
    other: &Bound<'py, PyString>,
) -> PyResult<(Vec<usize>, Vec<usize>)> {
    if calls.len() != results.len() {
        return Err(PyValueError::new_err("a result per call"));
    }
    let field = pyo3::intern!(py, "dimensions");
    let mut held = Vec::new();
    let mut folds = vec![0usize; labels.len()];
    // per values tuple (the calls of one combination share it): the labels, which fold
    let mut memo: FastMap<usize, (Bound<'py, PyTuple>, Vec<bool>)> = FastMap::default();
    let label = |values: &Bound<'py, PyTuple>| -> PyResult<(Bound<'py, PyTuple>, Vec<bool>)> {
        let mut out = Vec::with_capacity(labels.len());
        let mut folded = Vec::with_capacity(labels.len());
        for (slot, lab) in labels.iter().enumerate() {
            let value = values.get_item(slot)?;
            let got = lab
                .get_item(&value)?
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(value.unbind()))?;
            folded.push(got.eq(other)?);
            out.push(got);
        }
        Ok((PyTuple::new(py, out)?, folded))
    };
    let mut unknown: Option<(Bound<'py, PyTuple>, Vec<bool>)> = None;
    for (i, (call, got)) in calls.iter().zip(results.iter()).enumerate() {
        let entry = if got.is_none() {
            if unknown.is_none() {
                let blank = PyString::intern(py, "");
                let none = PyTuple::new(py, std::iter::repeat_n(blank, labels.len()))?;
                unknown = Some(label(&none)?);
            }
            unknown.as_ref().expect("set above")
        } else {
            let got = got.cast::<PyTuple>()?;
            let gap = got.get_item(1)?;
            if !gap.cast::<PyBytes>()?.as_bytes().is_empty() {
                held.push(i);
                continue;
            }
            let values = got.get_item(0)?.cast_into::<PyTuple>()?;
            let key = values.as_ptr() as usize;
            if !memo.contains_key(&key) {
                let labelled = label(&values)?;
                memo.insert(key, labelled);
            }
            &memo[&key]
        };
        call.setattr(field, &entry.0)?;
        for (n, &f) in folds.iter_mut().zip(&entry.1) {
            *n += f as usize;
        }
    }
    Ok((held, folds))
}
