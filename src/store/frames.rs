//! The store files' framing: the file header (magic, format version,
//! generation), the frame around each record (length and checksum), and
//! finding the next believable frame after damage.
//!
//! Pure: it must not do any I/O; what a damaged frame means for a start
//! (torn tail or damage) is decided by `replay.rs` and `repair.rs`.

use std::path::Path;

use super::records::{Record, decode_payload, encode_payload};
use super::{
    FILE_HEADER_CRC_OFFSET, FILE_HEADER_LEN, FORMAT_VERSION, HEADER_GENERATION_OFFSET,
    HEADER_VERSION_OFFSET, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, StoreError, corrupt,
};

pub(super) fn encode_file_header(magic: &[u8; 8], generation: u64) -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..HEADER_VERSION_OFFSET].copy_from_slice(magic);
    header[HEADER_VERSION_OFFSET..HEADER_GENERATION_OFFSET]
        .copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[HEADER_GENERATION_OFFSET..FILE_HEADER_CRC_OFFSET]
        .copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&header[..FILE_HEADER_CRC_OFFSET]);
    header[FILE_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates the header of `bytes` and returns its generation.
pub(super) fn parse_file_header(
    bytes: &[u8],
    magic: &[u8; 8],
    path: &Path,
) -> Result<u64, StoreError> {
    let header = bytes
        .get(..FILE_HEADER_LEN)
        .ok_or_else(|| corrupt(path, 0, "file is shorter than its header"))?;
    if header[..HEADER_VERSION_OFFSET] != magic[..] {
        return Err(corrupt(
            path,
            0,
            "bad magic: not an orch ban store file of this kind",
        ));
    }
    let version = le_array::<4>(header, HEADER_VERSION_OFFSET).map_or(0, u32::from_le_bytes);
    if version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let stored_crc = le_array::<4>(header, FILE_HEADER_CRC_OFFSET).map(u32::from_le_bytes);
    if stored_crc != Some(crc32fast::hash(&header[..FILE_HEADER_CRC_OFFSET])) {
        return Err(corrupt(path, 0, "header checksum mismatch"));
    }
    le_array::<8>(header, HEADER_GENERATION_OFFSET)
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt(path, HEADER_GENERATION_OFFSET, "header generation missing"))
}

/// Appends `[u32 len][u32 crc32(len ‖ payload)][payload]` to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, record: &Record<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    encode_payload(out, record);
    seal_record(out, start);
}

/// Fills in length and checksum of the record whose header begins at `start`.
pub(super) fn seal_record(out: &mut [u8], start: usize) {
    let payload_start = start + RECORD_HEADER_LEN;
    let payload_len = (out.len() - payload_start) as u32;
    let len_bytes = payload_len.to_le_bytes();
    let crc = record_crc(len_bytes, &out[payload_start..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// What sits at one offset of a file buffer.
pub(super) enum Frame<'a> {
    /// A record whose length and checksum are intact; `next` is the offset
    /// just past it.
    Intact {
        payload: &'a [u8],
        next: usize,
    },
    EndOfData,
    /// Torn or damaged bytes.
    Damaged(&'static str),
}

pub(super) fn read_frame(bytes: &[u8], offset: usize) -> Frame<'_> {
    let rest = bytes.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return Frame::EndOfData;
    }
    let (Some(len_bytes), Some(crc_bytes)) = (le_array::<4>(rest, 0), le_array::<4>(rest, 4))
    else {
        return Frame::Damaged("record header cut short");
    };
    let payload_len = u32::from_le_bytes(len_bytes) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Frame::Damaged("implausible record length");
    }
    let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len) else {
        return Frame::Damaged("record payload cut short");
    };
    if record_crc(len_bytes, payload) != u32::from_le_bytes(crc_bytes) {
        return Frame::Damaged("record checksum mismatch");
    }
    Frame::Intact {
        payload,
        next: offset + RECORD_HEADER_LEN + payload_len,
    }
}

fn le_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// How far the frames after a resync point must chain on without a gap
/// (unless they reach the end of the file) before they are believed: more
/// than any one record can span. Text inside a record (a reason another
/// host sent) may hold bytes shaped like a whole frame, CRC and all; such
/// a fake lies inside one record, and that record's next field (the ban's
/// source) breaks its chain within these bytes.
const RESYNC_PROOF_BYTES: usize = RECORD_HEADER_LEN + MAX_PAYLOAD_LEN;

/// Where the next record to believe begins after the damaged frame at
/// `damaged`, if any. First where the damaged frame's own length field
/// says (when that is plausible and a sound frame sits there: damage in a
/// payload or CRC skips exactly one record); else the first later offset
/// holding a sound frame (length within bounds, CRC good, payload decodes)
/// whose chain of sound frames reaches the end of the file or runs on for
/// [`RESYNC_PROOF_BYTES`].
pub(super) fn resync(bytes: &[u8], damaged: usize) -> Option<usize> {
    if let Some(len_bytes) = le_array::<4>(bytes, damaged) {
        let claimed = u32::from_le_bytes(len_bytes) as usize;
        let next = damaged + RECORD_HEADER_LEN + claimed;
        if claimed <= MAX_PAYLOAD_LEN && next < bytes.len() && sound_frame(bytes, next).is_some() {
            return Some(next);
        }
    }
    (damaged + 1..bytes.len()).find(|&candidate| chain_holds(bytes, candidate))
}

/// The offset after the frame at `offset` if that frame is intact and
/// holds a well-formed record.
fn sound_frame(bytes: &[u8], offset: usize) -> Option<usize> {
    match read_frame(bytes, offset) {
        Frame::Intact { payload, next } if decode_payload(payload).is_ok() => Some(next),
        _ => None,
    }
}

fn chain_holds(bytes: &[u8], start: usize) -> bool {
    let mut offset = start;
    while let Some(next) = sound_frame(bytes, offset) {
        if next == bytes.len() || next - start >= RESYNC_PROOF_BYTES {
            return true;
        }
        offset = next;
    }
    false
}

/// What a lenient walk over a file meets, in file order.
pub(super) enum Found<'a> {
    Record {
        offset: usize,
        record: Record<'a>,
    },
    /// An intact frame (length and CRC good) whose payload does not decode.
    Undecodable {
        offset: usize,
        len: usize,
        detail: String,
    },
    /// Bytes no record could be read from, up to where the walk resumed
    /// (`resumed`) or to the end of the file.
    Gap {
        offset: usize,
        len: usize,
        detail: &'static str,
        resumed: bool,
    },
}

/// Walks the frames from `start` to the end of `bytes`, stepping over
/// damage with [`resync`], and hands each find to `visit`.
pub(super) fn walk_leniently<'a>(bytes: &'a [u8], start: usize, mut visit: impl FnMut(Found<'a>)) {
    let mut offset = start;
    loop {
        match read_frame(bytes, offset) {
            Frame::EndOfData => return,
            Frame::Intact { payload, next } => {
                visit(match decode_payload(payload) {
                    Ok(record) => Found::Record { offset, record },
                    Err(detail) => Found::Undecodable {
                        offset,
                        len: next - offset,
                        detail,
                    },
                });
                offset = next;
            }
            Frame::Damaged(detail) => {
                let resumed = resync(bytes, offset);
                let end = resumed.unwrap_or(bytes.len());
                visit(Found::Gap {
                    offset,
                    len: end - offset,
                    detail,
                    resumed: resumed.is_some(),
                });
                match resumed {
                    Some(next) => offset = next,
                    None => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::test_support::{
        HOUR, NOW, ban, ban_with_fake_frame_in_reason, expect_corrupt, file_len, flip_byte,
        log_path, open, snapshot_path,
    };
    use std::fs;

    #[test]
    fn foreign_or_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let mut bytes = fs::read(snapshot_path(dir.path())).unwrap();
        bytes[HEADER_VERSION_OFFSET] = 2;
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        assert!(matches!(
            Store::open(dir.path(), NOW),
            Err(StoreError::UnsupportedVersion { found: 2, .. })
        ));
        bytes[..8].copy_from_slice(b"NOTORCH!");
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        expect_corrupt(Store::open(dir.path(), NOW));
    }

    #[test]
    fn resync_does_not_take_a_frame_inside_a_reason_for_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (hostile, fake) = ban_with_fake_frame_in_reason();
        let (damaged, next_real) = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            let damaged = file_len(&log_path(dir.path())) as usize;
            store.insert_bans(&[hostile]).unwrap();
            let next_real = file_len(&log_path(dir.path())) as usize;
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            (damaged, next_real)
        };
        let bytes = fs::read(log_path(dir.path())).unwrap();
        let fake_at = damaged
            + bytes[damaged..]
                .windows(fake.len())
                .position(|window| window == fake.as_slice())
                .expect("fake frame stored verbatim");
        assert!(
            sound_frame(&bytes, fake_at).is_some(),
            "the fake is a sound frame"
        );
        // An implausible length: resync has to search byte by byte.
        flip_byte(&log_path(dir.path()), damaged + 3);
        let bytes = fs::read(log_path(dir.path())).unwrap();
        assert_eq!(resync(&bytes, damaged), Some(next_real), "skips the fake");
        let error = Store::open(dir.path(), NOW).expect_err("mid-log damage");
        assert!(
            matches!(
                error,
                StoreError::LogDamaged {
                    intact_after: 1,
                    ..
                }
            ),
            "{error}"
        );
    }
}
