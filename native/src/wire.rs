//! The protobuf wire format, only as far as the helpers need: tags, varints and lengths.
//! Traces and logs requests share one shape: request {1: resource_*} -> resource_* {1:
//! resource, 2: scope_*} -> scope_* {2: items}; a span's attributes are field 9, a KeyValue's
//! key field 1.

pub struct Error(pub &'static str);

type Result<T> = std::result::Result<T, Error>;

#[inline]
fn varint(d: &[u8], pos: &mut usize, end: usize) -> Result<u64> {
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
fn each_len_field(
    d: &[u8],
    mut pos: usize,
    end: usize,
    mut f: impl FnMut(u64, usize, usize) -> Result<()>,
) -> Result<()> {
    while pos < end {
        let tag = varint(d, &mut pos, end)?;
        match tag & 7 {
            2 => {
                let n = usize::try_from(varint(d, &mut pos, end)?).map_err(|_| Error("length"))?;
                let e = pos
                    .checked_add(n)
                    .filter(|&e| e <= end)
                    .ok_or(Error("truncated message"))?;
                f(tag >> 3, pos, e)?;
                pos = e;
            }
            0 => {
                varint(d, &mut pos, end)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return Err(Error("unsupported wire type")),
        }
    }
    if pos != end {
        return Err(Error("truncated message"));
    }
    Ok(())
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
pub fn item_ranges(d: &[u8], out: &mut Vec<(usize, usize, i64, i64, i64)>) -> Result<()> {
    each_item(d, |start, end, r, s, i| {
        out.push((start, end, r, s, i));
        Ok(())
    })
}

/// For each span of a traces request (in parse order), the byte ranges of its attribute keys.
/// A KeyValue whose key field repeats keeps the last one, as the parser does; one without a
/// key has the key "".
pub fn span_keys(d: &[u8], out: &mut Vec<Vec<(usize, usize)>>) -> Result<()> {
    each_item(d, |c, e, _, scope, _| {
        if scope < 0 {
            return Ok(()); // a resource
        }
        let mut keys = Vec::with_capacity(16);
        each_len_field(d, c, e, |f4, g, h| {
            if f4 == 9 {
                let mut key = (g, g);
                each_len_field(d, g, h, |f5, k, l| {
                    if f5 == 1 {
                        key = (k, l);
                    }
                    Ok(())
                })?;
                keys.push(key);
            }
            Ok(())
        })?;
        out.push(keys);
        Ok(())
    })
}
