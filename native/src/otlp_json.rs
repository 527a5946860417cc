//! OTLP/JSON rendered straight from a serialized request (the file sink's encoder; the Python
//! twin: `pipeline.exporters.otlp_json`). What `decode.to_json` makes, byte for byte: present
//! fields in field-number order under their JSON names, 64-bit integers as strings, enums as
//! integers, doubles as Python's `repr` ("NaN" / "Infinity" / "-Infinity" quoted), bytes in
//! base64 but trace and span ids in hex, strings escaped as `json.dumps` does (ASCII only).
//!
//! The message layout is not compiled in: the schema is a table Python reads from the protobuf
//! descriptors (`otlp_json.schema`). What the walk does not render as upb would (a singular
//! field or a oneof written twice: upb merges or keeps the last) is an Error, and the caller
//! takes the Python path.

use base64::Engine;

pub struct Error(pub String);

fn err<T>(what: &str) -> Result<T, Error> {
    Err(Error(what.to_string()))
}

// descriptor.proto's FieldDescriptorProto.Type numbers
const DOUBLE: u8 = 1;
const INT64: u8 = 3;
const UINT64: u8 = 4;
const INT32: u8 = 5;
const FIXED64: u8 = 6;
const FIXED32: u8 = 7;
const BOOL: u8 = 8;
const STRING: u8 = 9;
const MESSAGE: u8 = 11;
const BYTES: u8 = 12;
const UINT32: u8 = 13;
const ENUM: u8 = 14;
const SFIXED32: u8 = 15;
const SFIXED64: u8 = 16;
const SINT32: u8 = 17;
const SINT64: u8 = 18;

/// Shallower than upb accepts (100 below the top): deeper requests take the Python path, so
/// the walk accepts nothing upb would refuse for its depth, and its recursion stays small.
const MAX_DEPTH: usize = 64;

pub struct Field {
    key: Vec<u8>, // `"jsonName":`
    kind: u8,
    repeated: bool,
    presence: bool,
    sub: usize,
    oneof: Option<usize>,
    id: bool,
}

impl Field {
    fn wire_type(&self) -> u8 {
        match self.kind {
            DOUBLE | FIXED64 | SFIXED64 => 1,
            FIXED32 | SFIXED32 => 5,
            STRING | BYTES | MESSAGE => 2,
            _ => 0,
        }
    }
}

pub struct Message {
    fields: Vec<Field>,
    by_number: Vec<Option<usize>>, // field number -> index in fields
}

pub struct Schema {
    messages: Vec<Message>,
}

/// (number, json name, type, repeated, presence, message index or -1, oneof index or -1, id)
pub type SchemaField = (u32, String, u8, bool, bool, i64, i64, bool);

impl Schema {
    pub fn new(table: Vec<Vec<SchemaField>>) -> Result<Schema, Error> {
        let n = table.len();
        let mut messages = Vec::with_capacity(n);
        for fields in table {
            let mut by_number = Vec::new();
            let mut out = Vec::with_capacity(fields.len());
            for (number, name, kind, repeated, presence, sub, oneof, id) in fields {
                let known = matches!(
                    kind,
                    DOUBLE
                        | INT64
                        | UINT64
                        | INT32
                        | FIXED64
                        | FIXED32
                        | BOOL
                        | STRING
                        | MESSAGE
                        | BYTES
                        | UINT32
                        | ENUM
                        | SFIXED32
                        | SFIXED64
                        | SINT32
                        | SINT64
                );
                if !known || (kind == MESSAGE && !(0..n as i64).contains(&sub)) {
                    return err(&format!("field {name}: type {kind} / message {sub}"));
                }
                if number == 0 || number > 1 << 16 {
                    return err(&format!("field {name}: number {number}"));
                }
                let number = number as usize;
                if by_number.len() <= number {
                    by_number.resize(number + 1, None);
                }
                by_number[number] = Some(out.len());
                let mut key = Vec::with_capacity(name.len() + 3);
                key.push(b'"');
                key.extend_from_slice(name.as_bytes());
                key.extend_from_slice(b"\":");
                out.push(Field {
                    key,
                    kind,
                    repeated,
                    presence,
                    sub: sub.max(0) as usize,
                    oneof: usize::try_from(oneof).ok(),
                    id,
                });
            }
            messages.push(Message {
                fields: out,
                by_number,
            });
        }
        if messages.is_empty() {
            return err("an empty schema");
        }
        Ok(Schema { messages })
    }
}

/// One occurrence of a known field: its index in the message's fields and its payload (a
/// varint or fixed value in `num`, or the bytes `data[start..end]`).
#[derive(Clone, Copy)]
struct Occ {
    field: usize,
    num: u64,
    start: usize,
    end: usize,
    packed: bool,
}

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, Error> {
    let mut out = 0u64;
    for shift in (0..70).step_by(7) {
        let Some(&b) = data.get(*pos) else {
            return err("truncated varint");
        };
        *pos += 1;
        if shift == 63 && b > 1 {
            return err("varint overflows 64 bits");
        }
        out |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(out);
        }
    }
    err("varint too long")
}

fn fixed(data: &[u8], pos: &mut usize, n: usize) -> Result<u64, Error> {
    let Some(b) = data.get(*pos..*pos + n) else {
        return err("truncated fixed field");
    };
    *pos += n;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(b);
    Ok(u64::from_le_bytes(v))
}

/// Writes chunks out as the buffer fills (the file sink: a large request never whole).
pub type Flush<'a> = dyn FnMut(&mut Vec<u8>) -> Result<(), Error> + 'a;

pub struct Encoder<'a> {
    schema: &'a Schema,
    pub out: Vec<u8>,
    occs: Vec<Occ>, // a stack: each message's occurrences above its parent's
    chunk: usize,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<'a> Encoder<'a> {
    pub fn new(schema: &'a Schema, chunk: usize) -> Self {
        Encoder {
            schema,
            out: Vec::with_capacity(chunk.clamp(1 << 12, 1 << 20)),
            occs: Vec::with_capacity(256),
            chunk,
        }
    }

    /// The JSON of `data` (a message of the schema's first type), flushed in pieces of about
    /// `chunk` bytes between elements of the messages three levels down (resource, scope,
    /// item) when `flush` is given; the rest is left in `out`.
    pub fn encode(&mut self, data: &[u8], flush: Option<&mut Flush<'_>>) -> Result<(), Error> {
        let mut flush = flush;
        self.message(data, 0, 0, &mut flush)
    }

    fn message(
        &mut self,
        data: &[u8],
        msg: usize,
        depth: usize,
        flush: &mut Option<&mut Flush<'_>>,
    ) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return err("nested too deeply");
        }
        let schema = self.schema;
        let m = &schema.messages[msg];
        let base = self.occs.len();
        let mut seen: u64 = 0; // singular fields (by index < 64) met so far
        let mut oneofs: u64 = 0;
        let mut sorted = true;
        let mut last = 0usize;
        let mut pos = 0;
        while pos < data.len() {
            let tag = varint(data, &mut pos)?;
            let (number, wire) = (tag >> 3, (tag & 7) as u8);
            let index = m.by_number.get(number as usize).copied().flatten();
            let (num, start, end) = match wire {
                0 => (varint(data, &mut pos)?, 0, 0),
                1 => (fixed(data, &mut pos, 8)?, 0, 0),
                5 => (fixed(data, &mut pos, 4)?, 0, 0),
                2 => {
                    let len = varint(data, &mut pos)? as usize;
                    let start = pos;
                    pos = start
                        .checked_add(len)
                        .filter(|&e| e <= data.len())
                        .ok_or(Error("truncated field".into()))?;
                    (0, start, pos)
                }
                _ => return err("unsupported wire type"),
            };
            if number == 0 {
                return err("field number 0");
            }
            let Some(index) = index else { continue }; // unknown: json_format skips it too
            let f = &m.fields[index];
            let packed = wire == 2 && f.repeated && f.wire_type() != 2;
            if wire != f.wire_type() && !packed {
                return err("a field of a known number with another wire type");
            }
            if !f.repeated {
                if index >= 64 || seen & (1 << index) != 0 {
                    return err("a singular field written twice");
                }
                seen |= 1 << index;
                if let Some(o) = f.oneof {
                    if o >= 64 || oneofs & (1 << o) != 0 {
                        return err("a oneof written twice");
                    }
                    oneofs |= 1 << o;
                }
            }
            if index < last {
                sorted = false;
            }
            last = index;
            self.occs.push(Occ {
                field: index,
                num,
                start,
                end,
                packed,
            });
        }
        if !sorted {
            self.occs[base..].sort_by_key(|o| o.field); // stable: repeated elements keep order
        }
        self.out.push(b'{');
        let mut first = true;
        let mut i = base;
        let top = self.occs.len();
        while i < top {
            let occ = self.occs[i];
            let f = &m.fields[occ.field];
            let mut j = i + 1;
            while j < top && self.occs[j].field == occ.field {
                j += 1;
            }
            if f.repeated {
                self.repeated(data, f, i, j, depth, &mut first, flush)?;
            } else if f.kind == MESSAGE {
                self.key(f, &mut first);
                self.message(&data[occ.start..occ.end], f.sub, depth + 1, flush)?;
            } else if f.presence || !self.is_default(f, &occ) {
                self.key(f, &mut first);
                self.scalar(f, occ.num, &data[occ.start..occ.end])?;
            }
            i = j;
        }
        self.occs.truncate(base);
        self.out.push(b'}');
        Ok(())
    }

    fn key(&mut self, f: &Field, first: &mut bool) {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        self.out.extend_from_slice(&f.key);
    }

    fn is_default(&self, f: &Field, occ: &Occ) -> bool {
        match f.kind {
            STRING | BYTES => occ.start == occ.end,
            FIXED32 | SFIXED32 | INT32 | UINT32 | ENUM | SINT32 | BOOL => occ.num as u32 == 0,
            _ => occ.num == 0, // doubles by their bits: -0.0 is written, as upb does
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeated(
        &mut self,
        data: &[u8],
        f: &Field,
        from: usize,
        to: usize,
        depth: usize,
        first: &mut bool,
        flush: &mut Option<&mut Flush<'_>>,
    ) -> Result<(), Error> {
        let mark = self.out.len();
        let was_first = *first;
        self.key(f, first);
        self.out.push(b'[');
        let mut n = 0;
        for k in from..to {
            let occ = self.occs[k];
            let payload = &data[occ.start..occ.end];
            if f.kind == MESSAGE {
                if n > 0 {
                    self.out.push(b',');
                }
                n += 1;
                self.message(payload, f.sub, depth + 1, flush)?;
                if depth < 3 && self.out.len() >= self.chunk {
                    if let Some(fl) = flush.as_mut() {
                        fl(&mut self.out)?;
                    }
                }
            } else if occ.packed {
                // packed: the elements one after another in the payload
                let mut pos = 0;
                while pos < payload.len() {
                    let v = match f.wire_type() {
                        0 => varint(payload, &mut pos)?,
                        1 => fixed(payload, &mut pos, 8)?,
                        _ => fixed(payload, &mut pos, 4)?,
                    };
                    if n > 0 {
                        self.out.push(b',');
                    }
                    n += 1;
                    self.scalar(f, v, &[])?;
                }
            } else {
                if n > 0 {
                    self.out.push(b',');
                }
                n += 1;
                self.scalar(f, occ.num, payload)?;
            }
        }
        if n == 0 {
            // only empty packed runs: json_format sees an empty list, which it leaves out
            self.out.truncate(mark);
            *first = was_first;
        } else {
            self.out.push(b']');
        }
        Ok(())
    }

    fn scalar(&mut self, f: &Field, v: u64, payload: &[u8]) -> Result<(), Error> {
        let out = &mut self.out;
        match f.kind {
            STRING => {
                let s =
                    std::str::from_utf8(payload).map_err(|_| Error("string not UTF-8".into()))?;
                escape(out, s);
            }
            BYTES if f.id => {
                out.push(b'"');
                for &b in payload {
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
                out.push(b'"');
            }
            BYTES => {
                out.push(b'"');
                let at = out.len();
                out.resize(at + payload.len().div_ceil(3) * 4, 0);
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(payload, &mut out[at..])
                    .map_err(|e| Error(e.to_string()))?;
                out.truncate(at + n);
                out.push(b'"');
            }
            INT64 | SFIXED64 => quoted(out, &(v as i64).to_string()),
            UINT64 | FIXED64 => quoted(out, &v.to_string()),
            SINT64 => quoted(out, &(((v >> 1) as i64) ^ -((v & 1) as i64)).to_string()),
            INT32 | ENUM | SFIXED32 => {
                out.extend_from_slice((v as u32 as i32).to_string().as_bytes())
            }
            UINT32 | FIXED32 => out.extend_from_slice((v as u32).to_string().as_bytes()),
            SINT32 => {
                let v = v as u32;
                let s = ((v >> 1) as i32) ^ -((v & 1) as i32);
                out.extend_from_slice(s.to_string().as_bytes());
            }
            BOOL => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
            DOUBLE => double(out, f64::from_bits(v)),
            _ => return err("unexpected field type"),
        }
        Ok(())
    }
}

fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Python's `repr` of a float (the shortest digits that read back; fixed notation for
/// 1e-4 <= |v| < 1e16, else d.ddde+XX), non-finite values as json_format's strings.
pub fn double(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
        return;
    }
    let e = format!("{v:e}"); // shortest round-trip digits: [-]d[.ddd]e[-]x
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: Vec<u8> = mantissa.bytes().filter(|&b| b != b'.').collect();
    let decpt = exp + 1; // v = 0.d1d2... x 10^decpt
    if neg {
        out.push(b'-');
    }
    let nd = digits.len() as i32;
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
            out.extend_from_slice(&digits);
        } else if decpt >= nd {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', (decpt - nd) as usize));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..decpt as usize]);
            out.push(b'.');
            out.extend_from_slice(&digits[decpt as usize..]);
        }
    } else {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let x = decpt - 1;
        out.extend_from_slice(
            format!("e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs()).as_bytes(),
        );
    }
}

/// `json.dumps`'s string with ensure_ascii: `"` `\` and the control characters escaped (\n \r
/// \t \b \f by name), everything outside space..~ as \uXXXX (lowercase; surrogate pairs).
pub fn escape(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain = 0; // start of the run of bytes copied as they are
    for (i, &b) in bytes.iter().enumerate() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            continue;
        }
        if (0x80..0xc0).contains(&b) {
            continue; // a continuation byte: its character was written at its first byte
        }
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ if b < 0x80 => unicode(out, u32::from(b)),
            _ => {
                let c = s[i..].chars().next().unwrap_or('\u{fffd}');
                let c = c as u32;
                if c >= 0x10000 {
                    let c = c - 0x10000;
                    unicode(out, 0xd800 | (c >> 10));
                    unicode(out, 0xdc00 | (c & 0x3ff));
                } else {
                    unicode(out, c);
                }
                plain = i + s[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn unicode(out: &mut Vec<u8>, c: u32) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((c >> shift) & 15) as usize]);
    }
}

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

fn value_error(e: Error) -> PyErr {
    PyValueError::new_err(e.0)
}

/// The OTLP/JSON of serialized messages of one type, given the schema table
/// `pipeline.exporters.otlp_json.schema` reads from its descriptor.
#[pyclass(module = "llm_pipeline_native", frozen)]
pub struct JsonEncoder {
    schema: Schema,
}

#[pymethods]
impl JsonEncoder {
    #[new]
    fn new(schema: Vec<Vec<SchemaField>>) -> PyResult<Self> {
        Ok(JsonEncoder {
            schema: Schema::new(schema).map_err(value_error)?,
        })
    }

    /// The JSON of `data`, whole (the GIL released while it is made).
    fn encode<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let out = py
            .detach(|| {
                let mut enc = Encoder::new(&self.schema, usize::MAX);
                enc.encode(data, None).map(|()| enc.out)
            })
            .map_err(value_error)?;
        Ok(PyBytes::new(py, &out))
    }

    /// The JSON of `data` and then `end`, passed to `write` in pieces of about `chunk` bytes
    /// (cut between resources, scopes and items); the number of bytes written. ValueError,
    /// possibly after some pieces were written, when the walk cannot render `data`.
    fn write(
        &self,
        py: Python<'_>,
        data: &[u8],
        write: Bound<'_, PyAny>,
        chunk: usize,
        end: &[u8],
    ) -> PyResult<usize> {
        let write = write.unbind();
        let mut written = 0usize;
        let mut failed: Option<PyErr> = None;
        let mut enc = Encoder::new(&self.schema, chunk.max(1));
        let mut emit = |buf: &mut Vec<u8>| -> Result<(), Error> {
            let res = Python::attach(|py| write.call1(py, (PyBytes::new(py, buf),)).map(|_| ()));
            written += buf.len();
            buf.clear();
            res.map_err(|e| {
                failed = Some(e);
                Error("write failed".into())
            })
        };
        let res = py.detach(|| -> Result<(), Error> {
            enc.encode(data, Some(&mut emit))?;
            enc.out.extend_from_slice(end);
            emit(&mut enc.out)
        });
        if let Some(e) = failed {
            return Err(e);
        }
        res.map_err(value_error)?;
        Ok(written)
    }
}
