//! The on-disk entry format and the scanner that reads it back.
//!
//! ```text
//! | body_len: u32 LE | crc32c: u32 LE | lsn: u64 LE | kind: u8 | body: body_len bytes |
//! ```
//! The CRC (Castagnoli) covers `lsn`, `kind` and `body`. LSNs strictly increase.

/// Header bytes before the body.
pub const HEADER_LEN: usize = 17;
/// Largest body accepted; anything larger in a header is treated as damage.
pub const MAX_BODY: usize = 1 << 30;

/// One decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Log sequence number.
    pub lsn: u64,
    /// Entry kind (owned by the caller's encoding).
    pub kind: u8,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Append the encoding of one entry to `out`.
pub fn encode(out: &mut Vec<u8>, lsn: u64, kind: u8, body: &[u8]) {
    let mut crc = crc32c::crc32c(&lsn.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &[kind]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// How a scan of one file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid entry.
    Clean,
    /// The bytes from `offset` on are an incomplete or damaged final write (a crash while
    /// appending); they were never acknowledged and may be cut off.
    TornTail {
        /// Where the valid prefix ends.
        offset: usize,
    },
    /// A damaged entry is followed by more data: the log is corrupt, not merely torn.
    Corrupt {
        /// Where the damaged entry starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Decode every valid entry of `buf` in order, stopping at the first problem.
/// `after_lsn` is the LSN the first entry must exceed.
pub fn scan(buf: &[u8], after_lsn: u64) -> (Vec<Entry>, ScanEnd) {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut last = after_lsn;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.iter().all(|&b| b == 0) {
            return (entries, ScanEnd::TornTail { offset: pos });
        }
        if rest.len() < HEADER_LEN {
            return (entries, ScanEnd::TornTail { offset: pos });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&rest[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);
        let kind = rest[16];
        if len > MAX_BODY {
            return (
                entries,
                ScanEnd::Corrupt {
                    offset: pos,
                    reason: format!("entry length {len} is implausible"),
                },
            );
        }
        if HEADER_LEN + len > rest.len() {
            return (entries, ScanEnd::TornTail { offset: pos });
        }
        let body = &rest[HEADER_LEN..HEADER_LEN + len];
        let mut want = crc32c::crc32c(&lsn_bytes);
        want = crc32c::crc32c_append(want, &[kind]);
        want = crc32c::crc32c_append(want, body);
        let end = pos + HEADER_LEN + len;
        if want != crc {
            let after = &buf[end..];
            if after.iter().all(|&b| b == 0) {
                return (entries, ScanEnd::TornTail { offset: pos });
            }
            return (
                entries,
                ScanEnd::Corrupt {
                    offset: pos,
                    reason: "checksum mismatch".into(),
                },
            );
        }
        if lsn <= last {
            return (
                entries,
                ScanEnd::Corrupt {
                    offset: pos,
                    reason: format!("lsn {lsn} does not follow {last}"),
                },
            );
        }
        last = lsn;
        entries.push(Entry {
            lsn,
            kind,
            body: body.to_vec(),
        });
        pos = end;
    }
    (entries, ScanEnd::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for lsn in 1..=n {
            starts.push(buf.len());
            encode(&mut buf, lsn, 1, format!("entry {lsn}").as_bytes());
        }
        (buf, starts)
    }

    #[test]
    fn clean_log_reads_back_every_entry() {
        let (buf, _) = log(5);
        let (entries, end) = scan(&buf, 0);
        assert_eq!(end, ScanEnd::Clean);
        assert_eq!(
            entries.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(entries[2].body, b"entry 3");
    }

    #[test]
    fn any_cut_inside_the_last_entry_is_a_torn_tail() {
        let (buf, starts) = log(3);
        for cut in starts[2] + 1..buf.len() {
            let (entries, end) = scan(&buf[..cut], 0);
            assert_eq!(entries.len(), 2, "cut at {cut}");
            assert_eq!(end, ScanEnd::TornTail { offset: starts[2] });
        }
    }

    #[test]
    fn garbage_in_the_last_entry_or_zero_fill_is_a_torn_tail() {
        let (mut buf, starts) = log(3);
        let last = buf.len() - 1;
        buf[last] ^= 0xFF;
        assert_eq!(scan(&buf, 0).1, ScanEnd::TornTail { offset: starts[2] });
        let (mut buf, _) = log(3);
        let clean_len = buf.len();
        buf.extend_from_slice(&[0u8; 4096]);
        assert_eq!(scan(&buf, 0).1, ScanEnd::TornTail { offset: clean_len });
    }

    #[test]
    fn a_damaged_entry_followed_by_data_is_corruption() {
        let (mut buf, starts) = log(3);
        buf[starts[1] + HEADER_LEN] ^= 0x01;
        let (entries, end) = scan(&buf, 0);
        assert_eq!(entries.len(), 1);
        assert!(matches!(end, ScanEnd::Corrupt { offset, .. } if offset == starts[1]));
    }

    #[test]
    fn lsns_must_increase() {
        let mut buf = Vec::new();
        encode(&mut buf, 5, 1, b"a");
        encode(&mut buf, 5, 1, b"b");
        assert!(matches!(scan(&buf, 0).1, ScanEnd::Corrupt { .. }));
        assert!(matches!(
            scan(&buf[..HEADER_LEN + 1], 5).1,
            ScanEnd::Corrupt { .. }
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic the scanner, and whatever it accepts is a valid prefix.
        #[test]
        fn scanning_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let (entries, end) = scan(&bytes, 0);
            let mut re = Vec::new();
            for e in &entries {
                encode(&mut re, e.lsn, e.kind, &e.body);
            }
            prop_assert!(bytes.starts_with(&re));
            if end == ScanEnd::Clean {
                prop_assert_eq!(re.len(), bytes.len());
            }
        }

        /// Flipping any byte of a valid log is detected: never a silently different entry.
        #[test]
        fn any_single_byte_flip_is_detected(pos in 0usize..400, flip in 1u8..=255) {
            let mut buf = Vec::new();
            for lsn in 1..=4u64 {
                encode(&mut buf, lsn, 1, &[lsn as u8; 80]);
            }
            let pos = pos % buf.len();
            let original = scan(&buf, 0).0;
            buf[pos] ^= flip;
            let (entries, end) = scan(&buf, 0);
            prop_assert!(end != ScanEnd::Clean || entries != original);
            for (got, want) in entries.iter().zip(&original) {
                if got != want {
                    prop_assert!(false, "a damaged entry was accepted");
                }
            }
        }
    }
}
