//! Parsers from a file's bytes to plain arrays: NumPy `.npy` / `.npz`, IDX (gzipped or
//! not), CSV and safetensors. No I/O here: the caller reads the bytes through `Fs`.
//!
//! None of these may panic or allocate more than the input justifies, whatever the bytes:
//! every size a header announces is checked against the bytes actually present before
//! anything is allocated.
//!
//! candle's own `Tensor::read_npy` / `read_npz` open files by path and trust the header's
//! element count for their allocation, so `.npy` is parsed here (a short, documented
//! format) and `.npz` archives are opened with the `zip` crate that candle already uses.
//! Safetensors go through `candle_core::safetensors::load_buffer`, which validates its
//! header against the buffer.

use super::error::DataError;
use std::io::{Cursor, Read};

/// One array as read from a file: its full shape (example axis first) and its values in
/// row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct RawArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Decompress a gzip stream (all members).
pub fn gunzip(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Err(DataError::BadMagic {
            file: file.into(),
            format: "gzip",
        });
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| DataError::Corrupt {
            file: file.into(),
            format: "gzip",
            detail: e.to_string(),
        })?;
    Ok(out)
}

/// Element types shared by the binary formats.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
            Elem::F16 | Elem::I16 | Elem::U16 => 2,
            Elem::F32 | Elem::I32 | Elem::U32 => 4,
            Elem::F64 | Elem::I64 | Elem::U64 => 8,
        }
    }
}

fn arr<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&c[..N]);
    a
}

/// IEEE half precision to f32 (numpy's `<f2`).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (bits >> 10) & 0x1f;
    let frac = (bits & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        0x1f if frac == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

/// Decode `count` elements from `bytes` (which holds at least `count * size` bytes).
fn decode(bytes: &[u8], elem: Elem, big_endian: bool, count: usize) -> Vec<f32> {
    let size = elem.size();
    let mut out = Vec::with_capacity(count);
    for c in bytes.chunks_exact(size).take(count) {
        macro_rules! num {
            ($t:ty, $n:literal) => {
                if big_endian {
                    <$t>::from_be_bytes(arr::<$n>(c))
                } else {
                    <$t>::from_le_bytes(arr::<$n>(c))
                }
            };
        }
        let v = match elem {
            Elem::F16 => f16_to_f32(num!(u16, 2)),
            Elem::F32 => num!(f32, 4),
            Elem::F64 => num!(f64, 8) as f32,
            Elem::I8 => c[0] as i8 as f32,
            Elem::U8 | Elem::Bool => c[0] as f32,
            Elem::I16 => num!(i16, 2) as f32,
            Elem::U16 => num!(u16, 2) as f32,
            Elem::I32 => num!(i32, 4) as f32,
            Elem::U32 => num!(u32, 4) as f32,
            Elem::I64 => num!(i64, 8) as f32,
            Elem::U64 => num!(u64, 8) as f32,
        };
        out.push(v);
    }
    out
}

/// The data size a header announces, or `None` when it overflows.
fn data_size(shape: &[usize], elem: Elem) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))?
        .checked_mul(elem.size())
}

/// Check that exactly `needed` bytes follow the header.
fn check_len(
    file: &str,
    format: &'static str,
    needed: usize,
    have: usize,
) -> Result<(), DataError> {
    if have < needed {
        return Err(DataError::Truncated {
            file: file.into(),
            format,
            needed: needed as u64,
            have: have as u64,
        });
    }
    if have > needed {
        return Err(DataError::Corrupt {
            file: file.into(),
            format,
            detail: format!(
                "{} bytes follow the {needed} bytes of data its header announces",
                have - needed
            ),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// IDX

/// Parse an IDX file (LeCun's MNIST format): two zero bytes, an element-type byte, the
/// number of dimensions, then each dimension as a big-endian u32 and the values
/// big-endian in row-major order. Parsed by hand: the format is a few lines, and no
/// maintained crate reads it from bytes.
pub fn parse_idx(bytes: &[u8], file: &str) -> Result<RawArray, DataError> {
    const FORMAT: &str = "IDX";
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::BadMagic {
            file: file.into(),
            format: FORMAT,
        });
    }
    let elem = match bytes[2] {
        0x08 => Elem::U8,
        0x09 => Elem::I8,
        0x0B => Elem::I16,
        0x0C => Elem::I32,
        0x0D => Elem::F32,
        0x0E => Elem::F64,
        t => {
            return Err(DataError::Corrupt {
                file: file.into(),
                format: FORMAT,
                detail: format!("unknown element type code 0x{t:02X}"),
            })
        }
    };
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(DataError::Corrupt {
            file: file.into(),
            format: FORMAT,
            detail: "the header declares zero dimensions".into(),
        });
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            file: file.into(),
            format: FORMAT,
            needed: header as u64,
            have: bytes.len() as u64,
        });
    }
    let shape: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(arr::<4>(c)) as usize)
        .collect();
    let needed = data_size(&shape, elem).ok_or_else(|| DataError::Corrupt {
        file: file.into(),
        format: FORMAT,
        detail: "the header announces an impossibly large array".into(),
    })?;
    let body = &bytes[header..];
    check_len(file, FORMAT, needed, body.len())?;
    let count = needed / elem.size();
    Ok(RawArray {
        data: decode(body, elem, true, count),
        shape,
    })
}

// ---------------------------------------------------------------------------------
// NPY / NPZ

/// The value of `key` in a NumPy header dict (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`): a quoted string, a parenthesised tuple, or a bare word.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header.get(at + key.len() + 2..)?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let first = rest.chars().next()?;
    match first {
        '\'' | '"' => {
            let body = rest.get(1..)?;
            body.find(first).and_then(|end| body.get(..end))
        }
        '(' => rest.find(')').and_then(|end| rest.get(1..end)),
        _ => {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest.get(..end).map(str::trim)
        }
    }
}

fn npy_elem(descr: &str) -> Option<(Elem, bool)> {
    let (order, ty) = match descr.chars().next()? {
        c @ ('<' | '>' | '|' | '=') => (c, descr.get(1..)?),
        _ => ('=', descr),
    };
    let big = order == '>';
    let elem = match ty {
        "f2" | "e" => Elem::F16,
        "f4" | "f" => Elem::F32,
        "f8" | "d" => Elem::F64,
        "i1" | "b" => Elem::I8,
        "i2" | "h" => Elem::I16,
        "i4" | "i" => Elem::I32,
        "i8" | "q" | "l" => Elem::I64,
        "u1" | "B" => Elem::U8,
        "u2" | "H" => Elem::U16,
        "u4" | "I" => Elem::U32,
        "u8" | "Q" | "L" => Elem::U64,
        "b1" | "?" => Elem::Bool,
        _ => return None,
    };
    Some((elem, big))
}

/// Parse a `.npy` file (format versions 1 to 3). `array` names it in errors.
pub fn parse_npy(bytes: &[u8], file: &str, array: &str) -> Result<RawArray, DataError> {
    const FORMAT: &str = "NumPy .npy";
    let corrupt = |detail: String| DataError::Corrupt {
        file: file.into(),
        format: FORMAT,
        detail,
    };
    if bytes.len() < 8 || &bytes[..6] != b"\x93NUMPY" {
        return Err(DataError::BadMagic {
            file: file.into(),
            format: FORMAT,
        });
    }
    let (len_bytes, header_len) = match bytes[6] {
        1 if bytes.len() >= 10 => (2, u16::from_le_bytes(arr::<2>(&bytes[8..])) as usize),
        2 | 3 if bytes.len() >= 12 => (4, u32::from_le_bytes(arr::<4>(&bytes[8..])) as usize),
        1..=3 => {
            return Err(DataError::Truncated {
                file: file.into(),
                format: FORMAT,
                needed: 12,
                have: bytes.len() as u64,
            })
        }
        v => return Err(corrupt(format!("unknown format version {v}"))),
    };
    let start: usize = 8 + len_bytes;
    let end = start.saturating_add(header_len);
    let Some(header) = bytes.get(start..end) else {
        return Err(DataError::Truncated {
            file: file.into(),
            format: FORMAT,
            needed: end as u64,
            have: bytes.len() as u64,
        });
    };
    let header = String::from_utf8_lossy(header);
    let descr = header_value(&header, "descr")
        .ok_or_else(|| corrupt("the header has no 'descr'".into()))?;
    let (elem, big) = npy_elem(descr).ok_or_else(|| DataError::UnsupportedDtype {
        file: file.into(),
        array: array.into(),
        dtype: descr.into(),
    })?;
    let fortran = match header_value(&header, "fortran_order") {
        Some("True") => true,
        Some("False") | None => false,
        Some(v) => return Err(corrupt(format!("fortran_order is {v}"))),
    };
    let shape_text = header_value(&header, "shape")
        .ok_or_else(|| corrupt("the header has no 'shape'".into()))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| corrupt(format!("the shape ({shape_text}) is not a tuple of sizes")))?;
    let needed = data_size(&shape, elem)
        .ok_or_else(|| corrupt("the header announces an impossibly large array".into()))?;
    let body = &bytes[end..];
    check_len(file, FORMAT, needed, body.len())?;
    let count = needed / elem.size();
    let mut data = decode(body, elem, big, count);
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Ok(RawArray { shape, data })
}

/// Reorder column-major (Fortran) values into row-major order.
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut strides = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    let mut out = vec![0f32; data.len()];
    for (j, &v) in data.iter().enumerate() {
        let mut rest = j;
        let mut at = 0;
        for (k, &d) in shape.iter().enumerate() {
            at += (rest % d) * strides[k];
            rest /= d;
        }
        out[at] = v;
    }
    out
}

/// Parse a `.npz` archive (`np.savez` or `np.savez_compressed`): every member `NAME.npy`
/// becomes an array `NAME`, in archive order.
pub fn parse_npz(bytes: &[u8], file: &str) -> Result<Vec<(String, RawArray)>, DataError> {
    const FORMAT: &str = "NumPy .npz (zip)";
    let corrupt = |detail: String| DataError::Corrupt {
        file: file.into(),
        format: FORMAT,
        detail,
    };
    if bytes.len() < 4 || &bytes[..2] != b"PK" {
        return Err(DataError::BadMagic {
            file: file.into(),
            format: FORMAT,
        });
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index_raw(i).map_err(|e| corrupt(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| corrupt(e.to_string()))?
            .to_string();
        if name.ends_with('/') {
            continue;
        }
        let size = entry.size();
        let method = entry.compression();
        let mut raw = Vec::new();
        entry
            .read_to_end(&mut raw)
            .map_err(|e| corrupt(format!("member {name}: {e}")))?;
        let member = if method == zip::CompressionMethod::STORE {
            raw
        } else if method == zip::CompressionMethod::DEFLATE {
            let mut out = Vec::new();
            // Deflate expands at most ~1032:1, so a header announcing more is a lie
            // that must not turn into an allocation.
            let cap = size.min((raw.len() as u64).saturating_mul(1032).saturating_add(1024));
            flate2::read::DeflateDecoder::new(raw.as_slice())
                .take(cap)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(format!("member {name}: {e}")))?;
            out
        } else {
            return Err(corrupt(format!(
                "member {name} uses compression method {method}, which vic does not read (use np.savez or np.savez_compressed)"
            )));
        };
        let array = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let parsed = parse_npy(&member, &format!("{file} (member {name})"), &array)?;
        out.push((array, parsed));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// safetensors

/// Parse a safetensors file: every tensor, converted to f32, in name order.
pub fn parse_safetensors(bytes: &[u8], file: &str) -> Result<Vec<(String, RawArray)>, DataError> {
    const FORMAT: &str = "safetensors";
    let corrupt = |detail: String| DataError::Corrupt {
        file: file.into(),
        format: FORMAT,
        detail,
    };
    if bytes.len() < 8 {
        return Err(DataError::Truncated {
            file: file.into(),
            format: FORMAT,
            needed: 8,
            have: bytes.len() as u64,
        });
    }
    let tensors = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu)
        .map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape = t.dims().to_vec();
        let data = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|_| DataError::UnsupportedDtype {
                file: file.into(),
                array: name.clone(),
                dtype: format!("{:?}", t.dtype()),
            })?;
        out.push((name, RawArray { shape, data }));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

// ---------------------------------------------------------------------------------
// CSV

/// Parse a numeric CSV table into a `[rows, columns]` array. A first row with a cell
/// that is not a number is a header and is skipped; blank lines are ignored.
pub fn parse_csv(bytes: &[u8], file: &str) -> Result<RawArray, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut data = Vec::new();
    let mut cols: Option<usize> = None;
    let mut rows = 0usize;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DataError::Corrupt {
            file: file.into(),
            format: "CSV",
            detail: e.to_string(),
        })?;
        let line = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(i + 1);
        let parsed: Vec<Result<f32, &str>> = record
            .iter()
            .map(|cell| cell.parse::<f32>().map_err(|_| cell))
            .collect();
        if i == 0 && parsed.iter().any(|c| c.is_err()) {
            continue; // a header row
        }
        if record.len() == 1 && record.get(0) == Some("") {
            continue;
        }
        let expected = *cols.get_or_insert(record.len());
        if record.len() != expected {
            return Err(DataError::CsvRagged {
                file: file.into(),
                line,
                expected,
                found: record.len(),
            });
        }
        for (column, cell) in parsed.into_iter().enumerate() {
            match cell {
                Ok(v) => data.push(v),
                Err(text) => {
                    return Err(DataError::CsvNotNumeric {
                        file: file.into(),
                        line,
                        column: column + 1,
                        text: text.into(),
                    })
                }
            }
        }
        rows += 1;
    }
    Ok(RawArray {
        shape: vec![rows, cols.unwrap_or(0)],
        data,
    })
}
