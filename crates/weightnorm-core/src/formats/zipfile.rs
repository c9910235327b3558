//! The zip container of `torch.save` (PyTorch 1.6 and later), read as PyTorch's own reader
//! (miniz) reads it: the end-of-central-directory record (and its ZIP64 form, which torch
//! writes whenever it can be needed) gives the central directory's offset from the start of
//! the file, and every entry is stored uncompressed at the offset its local header gives.
//!
//! The `zip` crate guesses where the central directory starts from its size instead, so that
//! prefixed archives open too; torch's ZIP64 records sit between the central directory and the
//! end record, and when they are as long as the first central header (a 21-character root
//! folder makes `<root>/data.pkl` exactly that long) the guess lands on the second header and
//! the archive is refused. Reading the declared offsets, as torch does, has no such case.

use std::collections::HashMap;

use super::PtError;

const EOCD: [u8; 4] = *b"PK\x05\x06";
const EOCD64: [u8; 4] = *b"PK\x06\x06";
const LOCATOR64: [u8; 4] = *b"PK\x06\x07";
const CENTRAL: [u8; 4] = *b"PK\x01\x02";
const LOCAL: [u8; 4] = *b"PK\x03\x04";

/// One stored entry: where its bytes are in the file, and their CRC-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The first byte.
    pub start: usize,
    /// The length.
    pub len: usize,
    /// The CRC-32 the archive records.
    pub crc: u32,
}

/// The entries of an archive, by name.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    /// The entries.
    pub entries: HashMap<String, Entry>,
}

fn bad(what: &'static str) -> PtError {
    PtError::Zip(what)
}

fn u16_at(d: &[u8], at: usize) -> Result<u16, PtError> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes(b.try_into().expect("2")))
        .ok_or(bad("a record runs past the end of the file"))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, PtError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        .ok_or(bad("a record runs past the end of the file"))
}

fn u64_at(d: &[u8], at: usize) -> Result<u64, PtError> {
    d.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
        .ok_or(bad("a record runs past the end of the file"))
}

fn offset(v: u64) -> Result<usize, PtError> {
    usize::try_from(v).map_err(|_| bad("an offset does not fit in memory"))
}

/// Reads the central directory of the archive `d`.
pub(crate) fn read(d: &[u8]) -> Result<Archive, PtError> {
    if d.len() < 22 {
        return Err(PtError::Zip("no end-of-central-directory record"));
    }
    // The end record is the last one whose comment ends at the end of the file.
    let min = d.len().saturating_sub(22 + 0xffff);
    let eocd = (min..=d.len().saturating_sub(22))
        .rev()
        .find(|&i| {
            d[i..i + 4] == EOCD
                && u16_at(d, i + 20).is_ok_and(|c| i + 22 + usize::from(c) == d.len())
        })
        .ok_or(PtError::Zip("no end-of-central-directory record"))?;
    let mut count = u64::from(u16_at(d, eocd + 10)?);
    let mut size = u64::from(u32_at(d, eocd + 12)?);
    let mut start = u64::from(u32_at(d, eocd + 16)?);
    if eocd >= 20 && d[eocd - 20..eocd - 16] == LOCATOR64 {
        let at = offset(u64_at(d, eocd - 20 + 8)?)?;
        if d.get(at..at + 4) != Some(&EOCD64[..]) {
            return Err(bad("the ZIP64 locator points at no ZIP64 end record"));
        }
        count = u64_at(d, at + 32)?;
        size = u64_at(d, at + 40)?;
        start = u64_at(d, at + 48)?;
    }
    let start = offset(start)?;
    let end = start
        .checked_add(offset(size)?)
        .filter(|&e| e <= eocd)
        .ok_or(bad("the central directory runs past its end record"))?;
    // Each central header takes at least 46 bytes: the count is bounded by the directory size.
    if count > (size / 46) {
        return Err(bad(
            "the central directory holds fewer headers than it declares",
        ));
    }
    let mut archive = Archive::default();
    let mut at = start;
    for _ in 0..count {
        if at + 46 > end || d[at..at + 4] != CENTRAL {
            return Err(bad("a central directory header is missing or malformed"));
        }
        let method = u16_at(d, at + 10)?;
        let crc = u32_at(d, at + 16)?;
        let mut csize = u64::from(u32_at(d, at + 20)?);
        let mut usize_ = u64::from(u32_at(d, at + 24)?);
        let name_len = usize::from(u16_at(d, at + 28)?);
        let extra_len = usize::from(u16_at(d, at + 30)?);
        let comment_len = usize::from(u16_at(d, at + 32)?);
        let mut local = u64::from(u32_at(d, at + 42)?);
        let name_at = at + 46;
        let next = name_at + name_len + extra_len + comment_len;
        if next > end {
            return Err(bad("a central directory header runs past the directory"));
        }
        let name = std::str::from_utf8(&d[name_at..name_at + name_len])
            .map_err(|_| bad("an entry name is not UTF-8"))?
            .to_string();
        // The ZIP64 extra field holds, in order, the fields that are 0xffffffff above.
        let mut x = name_at + name_len;
        let x_end = x + extra_len;
        while x + 4 <= x_end {
            let id = u16_at(d, x)?;
            let len = usize::from(u16_at(d, x + 2)?);
            if x + 4 + len > x_end {
                return Err(bad("an extra field runs past its header"));
            }
            if id == 1 {
                let mut f = x + 4;
                for field in [&mut usize_, &mut csize, &mut local] {
                    if *field == 0xffff_ffff {
                        if f + 8 > x + 4 + len {
                            return Err(bad("a ZIP64 extra field is too short"));
                        }
                        *field = u64_at(d, f)?;
                        f += 8;
                    }
                }
            }
            x += 4 + len;
        }
        if method != 0 {
            return Err(PtError::Compressed(name));
        }
        if csize != usize_ {
            return Err(bad("a stored entry's sizes disagree"));
        }
        let local = offset(local)?;
        if u32_at(d, local).ok() != Some(u32::from_le_bytes(LOCAL)) {
            return Err(bad("an entry's local header is missing"));
        }
        let data =
            local + 30 + usize::from(u16_at(d, local + 26)?) + usize::from(u16_at(d, local + 28)?);
        let len = offset(csize)?;
        if data.checked_add(len).is_none_or(|e| e > d.len()) {
            return Err(bad("an entry's data runs past the end of the file"));
        }
        if archive
            .entries
            .insert(
                name.clone(),
                Entry {
                    start: data,
                    len,
                    crc,
                },
            )
            .is_some()
        {
            return Err(PtError::DuplicateEntry(name));
        }
        at = next;
    }
    Ok(archive)
}

/// The CRC-32 (IEEE) of `data`, as zip records it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(read(b"").is_err());
        assert!(read(b"PK\x03\x04 not much else").is_err());
        let mut eocd = b"PK\x05\x06".to_vec();
        eocd.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        eocd.extend_from_slice(&[0xff; 8]);
        eocd.extend_from_slice(&[0, 0]);
        assert!(read(&eocd).is_err());
    }
}
