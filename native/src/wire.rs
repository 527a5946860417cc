//! The protobuf wire format, only as far as the helpers need: tags, varints and lengths.
//! Traces and logs requests share one shape: request {1: resource_*} -> resource_* {1:
//! resource, 2: scope_*} -> scope_* {2: items}; a span's attributes are field 9, a KeyValue's
//! key field 1.

pub struct Error(pub &'static str);

pub type Result<T> = std::result::Result<T, Error>;

/// Tags and the lengths of keys and short values are one byte: that path is inlined into the
/// walks, the rest is a call.
#[inline(always)]
pub(crate) fn varint(d: &[u8], pos: &mut usize, end: usize) -> Result<u64> {
    if *pos < end && d[*pos] < 0x80 {
        *pos += 1;
        return Ok(u64::from(d[*pos - 1]));
    }
    varint_long(d, pos, end)
}

#[cold]
#[inline(never)]
fn varint_long(d: &[u8], pos: &mut usize, end: usize) -> Result<u64> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        if *pos >= end {
            return Err(Error("truncated varint"));
        }
        let b = d[*pos];
        *pos += 1;
        result |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(result);
        }
        shift += 7;
        if shift > 63 {
            return Err(Error("varint too long"));
        }
    }
}

/// Calls `f(field number, start, end)` for each length-delimited field of the message
/// d[pos..end], skipping the others.
#[inline]
pub(crate) fn each_len_field(
    d: &[u8],
    pos: usize,
    end: usize,
    mut f: impl FnMut(u64, usize, usize) -> Result<()>,
) -> Result<()> {
    each_field(
        d,
        pos,
        end,
        |field, wt, _, a, b| {
            if wt == 2 {
                f(field, a, b)
            } else {
                Ok(())
            }
        },
    )
}

/// Calls `f(start, end, resource, scope, item)` for every resource (scope and item -1) and
/// every item (span / log record) of a traces or logs request, in wire order.
#[inline]
fn each_item(d: &[u8], mut f: impl FnMut(usize, usize, i64, i64, i64) -> Result<()>) -> Result<()> {
    let mut r = 0i64;
    each_len_field(d, 0, d.len(), |field, start, end| {
        if field != 1 {
            return Ok(());
        }
        let mut s = 0i64;
        each_len_field(d, start, end, |f2, a, b| {
            if f2 == 1 {
                f(a, b, r, -1, -1)?;
            } else if f2 == 2 {
                let mut i = 0i64;
                each_len_field(d, a, b, |f3, c, e| {
                    if f3 == 2 {
                        f(c, e, r, s, i)?;
                        i += 1;
                    }
                    Ok(())
                })?;
                s += 1;
            }
            Ok(())
        })?;
        r += 1;
        Ok(())
    })
}

/// The Python twin: `pipeline.processors._wire.py_item_ranges` (unsorted here).
/// (start, end, resource, scope, item)
pub type ItemRange = (usize, usize, i64, i64, i64);

pub fn item_ranges(d: &[u8], out: &mut Vec<ItemRange>) -> Result<()> {
    each_item(d, |start, end, r, s, i| {
        out.push((start, end, r, s, i));
        Ok(())
    })
}

/// Calls `f(field number, wire type, scalar, start, end)` for each field of the message
/// d[pos..end]: a varint or fixed value in `scalar`, a length-delimited one as start..end.
#[inline]
pub(crate) fn each_field(
    d: &[u8],
    mut pos: usize,
    end: usize,
    mut f: impl FnMut(u64, u64, u64, usize, usize) -> Result<()>,
) -> Result<()> {
    while pos < end {
        let tag = varint(d, &mut pos, end)?;
        let (wt, field) = (tag & 7, tag >> 3);
        match wt {
            0 => {
                let v = varint(d, &mut pos, end)?;
                f(field, wt, v, pos, pos)?;
            }
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                let e = pos
                    .checked_add(n)
                    .filter(|&e| e <= end)
                    .ok_or(Error("truncated fixed"))?;
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&d[pos..e]);
                f(field, wt, u64::from_le_bytes(b), pos, e)?;
                pos = e;
            }
            2 => {
                let n = usize::try_from(varint(d, &mut pos, end)?).map_err(|_| Error("length"))?;
                let e = pos
                    .checked_add(n)
                    .filter(|&e| e <= end)
                    .ok_or(Error("truncated message"))?;
                f(field, wt, 0, pos, e)?;
                pos = e;
            }
            _ => return Err(Error("unsupported wire type")),
        }
    }
    Ok(())
}

/// An attribute's value as the parser sees it: the last scalar member set, or `Complex` when
/// the helpers do not read it (arrays, kvlists, bytes, a value message that repeats) and the
/// caller reads the span through the parser instead.
pub enum Value {
    Unset,
    Str(usize, usize),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array, // of scalars
    Complex,
}

pub(crate) fn any_value(d: &[u8], start: usize, end: usize, nested: bool) -> Result<Value> {
    let mut out = Value::Unset;
    let mut arrays = 0;
    each_field(d, start, end, |field, wt, v, a, b| {
        out = match (field, wt) {
            (1, 2) => Value::Str(a, b),
            (2, 0) => Value::Bool(v != 0),
            (3, 0) => Value::Int(v as i64),
            (4, 1) => Value::Double(f64::from_bits(v)),
            // an array of scalars; the parser merges a repeated array_value, so leave that
            // (and arrays in arrays) to it
            (5, 2) if !nested && arrays == 0 => {
                arrays += 1;
                let mut complex = false;
                each_field(d, a, b, |f2, w2, _, c, e| {
                    if f2 == 1 && w2 == 2 {
                        complex |= matches!(any_value(d, c, e, true)?, Value::Complex);
                    }
                    Ok(())
                })?;
                if complex {
                    Value::Complex
                } else {
                    Value::Array
                }
            }
            (5..=7, 2) => Value::Complex,
            _ => return Ok(()), // unknown to the parser
        };
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn key_value(d: &[u8], start: usize, end: usize) -> Result<Value> {
    let mut out = Value::Unset;
    let mut seen = false;
    each_field(d, start, end, |field, wt, _, a, b| {
        if field == 2 && wt == 2 {
            // a repeated value message is merged by the parser: leave that to it
            out = if seen {
                Value::Complex
            } else {
                any_value(d, a, b, false)?
            };
            seen = true;
        }
        Ok(())
    })?;
    Ok(out)
}

/// The trace_id, span_id and parent_span_id of each span of a traces request, in parse order.
pub fn span_ids(d: &[u8], out: &mut Vec<[(usize, usize); 3]>) -> Result<()> {
    each_item(d, |c, e, _, scope, _| {
        if scope < 0 {
            return Ok(());
        }
        let mut ids = [(c, c); 3];
        each_len_field(d, c, e, |field, a, b| {
            match field {
                1 => ids[0] = (a, b),
                2 => ids[1] = (a, b),
                4 => ids[2] = (a, b),
                _ => {}
            }
            Ok(())
        })?;
        out.push(ids);
        Ok(())
    })
}

/// Hint matches, sorted by start, for "does any overlap [x, y)" in O(log n).
pub struct Hits {
    starts: Vec<usize>,
    max_end: Vec<usize>, // the largest end among the hits up to each index
}

impl Hits {
    pub fn new(mut hits: Vec<(usize, usize)>) -> Self {
        hits.sort_unstable();
        let mut m = 0;
        let max_end = hits
            .iter()
            .map(|&(_, b)| {
                m = m.max(b);
                m
            })
            .collect();
        Hits {
            starts: hits.iter().map(|&(a, _)| a).collect(),
            max_end,
        }
    }

    pub fn overlaps(&self, x: usize, y: usize) -> bool {
        let k = self.starts.partition_point(|&s| s < y);
        k > 0 && self.max_end[k - 1] > x
    }
}

/// What redaction walks in a traces request, where hint matches overlap it:
/// (resource, scope, span, kind, i, j, start, end) with kind 0: resource attribute i; 1: span
/// name; 2: span attribute i; 3: event i's attribute j; 4: link i's attribute j; 5: status
/// message (unused indices -1). Indices count the parsed message's repeated items (wire
/// order). start..end: where the string to redact lies when it can be replaced in place (a
/// value with one string member set once, a name or status message written once), else -1:
/// replacing one occurrence of a repeated field would leave the others' bytes in the request.
pub type Target = (i64, i64, i64, u8, i64, i64, i64, i64);

const NO_RANGE: (i64, i64) = (-1, -1);

fn range(a: usize, b: usize) -> (i64, i64) {
    (a as i64, b as i64)
}

/// The string content of a KeyValue's value when it is the value's only member, set once.
fn plain_string(d: &[u8], start: usize, end: usize) -> Result<(i64, i64)> {
    let mut value = None;
    let mut values = 0;
    each_field(d, start, end, |f, wt, _, a, b| {
        if f == 2 && wt == 2 {
            values += 1;
            value = Some((a, b));
        }
        Ok(())
    })?;
    let Some((a, b)) = value.filter(|_| values == 1) else {
        return Ok(NO_RANGE);
    };
    let mut fields = 0;
    let mut text = NO_RANGE;
    each_field(d, a, b, |f, wt, _, x, y| {
        fields += 1;
        if f == 1 && wt == 2 {
            text = range(x, y);
        }
        Ok(())
    })?;
    Ok(if fields == 1 { text } else { NO_RANGE })
}

pub fn trace_targets(d: &[u8], hits: &Hits, out: &mut Vec<Target>) -> Result<()> {
    each_item(d, |start, end, r, s, i| {
        if !hits.overlaps(start, end) {
            return Ok(());
        }
        if s < 0 {
            let mut x = 0i64;
            return each_len_field(d, start, end, |f, a, b| {
                if f == 1 {
                    if hits.overlaps(a, b) {
                        let (p, q) = plain_string(d, a, b)?;
                        out.push((r, -1, -1, 0, x, -1, p, q));
                    }
                    x += 1;
                }
                Ok(())
            });
        }
        let (mut attr, mut event, mut link) = (0i64, 0i64, 0i64);
        let (mut name, mut names) = (None, 0);
        let (mut status, mut statuses) = (None, 0);
        each_len_field(d, start, end, |f, a, b| {
            match f {
                5 => {
                    names += 1;
                    name = Some((a, b));
                }
                9 => {
                    if hits.overlaps(a, b) {
                        let (p, q) = plain_string(d, a, b)?;
                        out.push((r, s, i, 2, attr, -1, p, q));
                    }
                    attr += 1;
                }
                11 | 13 => {
                    let (kind, field, n) = if f == 11 {
                        (3, 3, &mut event)
                    } else {
                        (4, 4, &mut link)
                    };
                    if hits.overlaps(a, b) {
                        let mut y = 0i64;
                        each_len_field(d, a, b, |f2, c, e| {
                            if f2 == field {
                                if hits.overlaps(c, e) {
                                    let (p, q) = plain_string(d, c, e)?;
                                    out.push((r, s, i, kind, *n, y, p, q));
                                }
                                y += 1;
                            }
                            Ok(())
                        })?;
                    }
                    *n += 1;
                }
                15 => {
                    statuses += 1;
                    status = Some((a, b));
                }
                _ => {}
            }
            Ok(())
        })?;
        // (a name or status the hits do not overlap cannot hold what they found)
        if let Some((a, b)) = name.filter(|&(a, b)| hits.overlaps(a, b)) {
            let (p, q) = if names == 1 { range(a, b) } else { NO_RANGE };
            out.push((r, s, i, 1, -1, -1, p, q));
        }
        if let Some((a, b)) = status.filter(|&(a, b)| hits.overlaps(a, b)) {
            let (mut message, mut messages) = (NO_RANGE, 0);
            each_len_field(d, a, b, |f2, c, e| {
                if f2 == 2 {
                    messages += 1;
                    message = range(c, e);
                }
                Ok(())
            })?;
            let (p, q) = if statuses == 1 && messages == 1 {
                message
            } else {
                NO_RANGE
            };
            out.push((r, s, i, 5, -1, -1, p, q));
        }
        Ok(())
    })
}

/// A change to a serialized message: the bytes start..end (the content of one
/// length-delimited field) replaced, or with `append`, bytes added at the end of the message
/// whose content is start..end.
pub struct Edit<'a> {
    pub start: usize,
    pub end: usize,
    pub bytes: &'a [u8],
    pub append: bool,
}

/// The message d with the edits (sorted by start, then end) applied and the lengths of every
/// field around them rewritten; an error when an edit is not the content of a field.
pub fn patch(d: &[u8], edits: &[Edit<'_>]) -> Result<Vec<u8>> {
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(d.len() + extra + 64);
    rewrite(d, 0, d.len(), edits, &mut out)?;
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Writes d[start..end] with the edits applied to `out`. A changed field's content is written
/// after room for its old length; the length is filled in after (moving the content only
/// when the new length needs another number of bytes), so every byte is copied once.
fn rewrite(
    d: &[u8],
    start: usize,
    end: usize,
    edits: &[Edit<'_>],
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut pos = start;
    let mut next = 0; // the first edit not yet applied
    while pos < end && next < edits.len() {
        let field_start = pos;
        let tag = varint(d, &mut pos, end)?;
        let tag_end = pos;
        let skip = |pos: &mut usize, n: usize| -> Result<()> {
            *pos = pos
                .checked_add(n)
                .filter(|&p| p <= end)
                .ok_or(Error("truncated"))?;
            Ok(())
        };
        match tag & 7 {
            0 => {
                varint(d, &mut pos, end)?;
            }
            1 => skip(&mut pos, 8)?,
            5 => skip(&mut pos, 4)?,
            2 => {
                let n = usize::try_from(varint(d, &mut pos, end)?).map_err(|_| Error("length"))?;
                let (cs, len_end) = (pos, pos);
                skip(&mut pos, n)?;
                let ce = pos;
                let run = edits[next..]
                    .iter()
                    .take_while(|e| e.start >= cs && e.end <= ce)
                    .count();
                if run > 0 {
                    let here = &edits[next..next + run];
                    next += run;
                    // edits of the whole content sort first (no nested one starts at cs)
                    let whole = here
                        .iter()
                        .take_while(|e| e.start == cs && e.end == ce)
                        .count();
                    let (own, nested) = here.split_at(whole);
                    out.extend_from_slice(&d[field_start..tag_end]);
                    let len_at = out.len();
                    let old_len = len_end - tag_end;
                    out.extend_from_slice(&d[tag_end..len_end]); // room for the length
                    match own {
                        [only] if !only.append && nested.is_empty() => {
                            out.extend_from_slice(only.bytes)
                        }
                        _ if own.iter().all(|e| e.append) => {
                            rewrite(d, cs, ce, nested, out)?;
                            for e in own {
                                out.extend_from_slice(e.bytes);
                            }
                        }
                        _ => return Err(Error("an edit replaces a field that has other edits")),
                    }
                    let content = out.len() - len_at - old_len;
                    let mut length = Vec::with_capacity(10);
                    put_varint(&mut length, content as u64);
                    if length.len() == old_len {
                        out[len_at..len_at + old_len].copy_from_slice(&length);
                    } else {
                        out.splice(len_at..len_at + old_len, length);
                    }
                    continue;
                }
            }
            _ => return Err(Error("unsupported wire type")),
        }
        out.extend_from_slice(&d[field_start..pos]);
    }
    if next < edits.len() {
        return Err(Error("an edit is not the content of a field"));
    }
    out.extend_from_slice(&d[pos..end]);
    Ok(())
}
