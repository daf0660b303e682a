//! Finding a valid record after a bad one, in time linear in the bytes searched.
//!
//! Recovery must tell a torn tail (nothing valid after the bad frame: cut it) from
//! corruption (a valid record further on: refuse). Trying [`frame_at`](super::frame_at) at
//! every later offset hashes up to [`MAX_RECORD`] bytes per offset, so a tail of garbage whose
//! length fields happen to fit cost O(n²) (hours for a few MiB). Here each byte is hashed once:
//! the CRC-32 of every prefix that a candidate frame needs is computed in one pass, and a
//! candidate's CRC is derived from two prefix CRCs with one `combine` (O(log len)).

use super::{HEADER, MAX_RECORD};

/// The work [`first_frame`] did: at most one hashed byte and one CRC check per byte searched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ScanWork {
    /// Offsets whose length field fits the data (each gets one CRC check).
    pub candidates: usize,
    /// Bytes fed to the CRC.
    pub bytes_hashed: usize,
}

/// The first offset at or after `from` where a well-framed record (length in range, CRC
/// matching) lies entirely inside `data`; `work` counts what the search cost.
pub(super) fn first_frame(data: &[u8], from: usize, work: &mut ScanWork) -> Option<usize> {
    // Offsets whose length field fits, with where their payload ends.
    let candidates: Vec<(usize, usize)> = (from..data.len().saturating_sub(HEADER - 1))
        .filter_map(|start| {
            let len = u32::from_le_bytes(data[start..start + 4].try_into().ok()?) as usize;
            let end = (start + HEADER).checked_add(len)?;
            (len != 0 && len <= MAX_RECORD && end <= data.len()).then_some((start, end))
        })
        .collect();
    work.candidates += candidates.len();
    if candidates.is_empty() {
        return None;
    }
    // CRC-32 of data[from..p] at every p a candidate's payload starts or ends at.
    let mut marks: Vec<usize> = candidates
        .iter()
        .flat_map(|&(start, end)| [start + HEADER, end])
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let mut prefix_crcs = Vec::with_capacity(marks.len());
    let mut hasher = crc32fast::Hasher::new();
    let mut hashed_to = from;
    for &mark in &marks {
        hasher.update(&data[hashed_to..mark]);
        work.bytes_hashed += mark - hashed_to;
        hashed_to = mark;
        prefix_crcs.push(hasher.clone().finalize());
    }
    let prefix_crc = |p: usize| marks.binary_search(&p).ok().map(|i| prefix_crcs[i]);

    candidates.into_iter().find_map(|(start, end)| {
        let len_bytes = &data[start..start + 4];
        let stored = u32::from_le_bytes(data[start + 4..start + HEADER].try_into().ok()?);
        let payload_len = (end - start - HEADER) as u64;
        // crc(a ‖ b) = shift(crc(a), |b|) ^ crc(b), and shift is linear, so with
        // P(p) = crc(data[from..p]): crc(len ‖ payload) = shift(crc(len) ^ P(start + 8), |payload|) ^ P(end).
        let head = crc32fast::hash(len_bytes) ^ prefix_crc(start + HEADER)?;
        let mut frame_crc = crc32fast::Hasher::new_with_initial(head);
        frame_crc.combine(&crc32fast::Hasher::new_with_initial_len(
            prefix_crc(end)?,
            payload_len,
        ));
        (frame_crc.finalize() == stored).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::super::{frame, frame_at};
    use super::*;

    /// The old search: `frame_at` at every offset.
    fn first_frame_slowly(data: &[u8], from: usize) -> Option<usize> {
        (from..data.len()).find(|&p| frame_at(data, p).is_some())
    }

    #[test]
    fn finds_what_trying_every_offset_finds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for case in 0..300 {
            // Garbage with short length fields, and sometimes a real record inside it.
            let mut data: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random_range(0..4u8))
                .collect();
            if case % 2 == 0 {
                let at = rng.random_range(0..=data.len());
                let mut record = Vec::new();
                frame(b"Sdata", &mut record).expect("small record");
                data.splice(at..at, record);
            }
            let from = rng.random_range(0..=data.len());
            assert_eq!(
                first_frame(&data, from, &mut ScanWork::default()),
                first_frame_slowly(&data, from),
                "case {case}: {data:?} from {from}"
            );
        }
    }

    /// 1 MiB where three offsets in four carry a length that fits (256 KiB, 1 KiB or 4
    /// bytes; the old search hashed ~5·10¹⁰ bytes for it) costs at most one hashed byte and
    /// one CRC check per byte.
    #[test]
    fn plausible_garbage_costs_linear_work() {
        let garbage: Vec<u8> = [0x00u8, 0x00, 0x04, 0x00].repeat(256 << 10);
        let mut work = ScanWork::default();
        assert_eq!(first_frame(&garbage, 0, &mut work), None);
        assert!(work.candidates >= garbage.len() / 2, "{work:?}");
        assert!(work.candidates <= garbage.len(), "{work:?}");
        assert!(work.bytes_hashed <= garbage.len(), "{work:?}");

        let mut with_record = garbage.clone();
        let at = with_record.len() - 100;
        let mut record = Vec::new();
        frame(b"Sdata", &mut record).expect("small record");
        with_record.splice(at..at, record);
        let mut work = ScanWork::default();
        assert_eq!(first_frame(&with_record, 0, &mut work), Some(at));
        assert!(work.bytes_hashed <= with_record.len(), "{work:?}");
    }
}
