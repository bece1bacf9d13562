//! The bodies of large Raft log entries (above 4 KiB: console output), in append-only segment files beside
//! sled (a value log, as WiscKey does); the log tree keeps, per index, only an `EntryRef` to the body.
//!
//! Why: sled 0.34 keeps values inline in its leaves and splits a leaf only above 16 items, so a log of
//! 64–256 KiB console entries made 1–4 MiB leaves that sled re-serialized and rewrote (as separate blob
//! files, created and fsync'd one by one) again and again: a log flood spent most of its CPU and disk
//! there. Here a body is written once, with one `write` at the end of a file, and read with one `pread`.
//!
//! Durability: a body is written before its `EntryRef` is inserted, and the group commit fsyncs every
//! segment written since its last round *before* it flushes sled, so what openraft is told is durable has
//! both halves. sled may still persist an `EntryRef` early on its own (its background flush): only a power
//! loss can then leave a ref to bytes that never reached the disk, and `open` checks the bodies of the
//! newest segment (the only one with unsynced writes) by their checksum so the store's check can drop
//! such a tail (`EntryBodyLost`).
//!
//! Space: truncated bodies stay in their segment as garbage; a segment file is deleted once every index it
//! holds is purged (it is never the one being written), or on open when no ref points into it.
//!
//! Format: a segment starts with `SEGMENT_MAGIC` and a version byte; a ref is `REF_TAG` then the `codec`
//! encoding of `EntryRef`. `REF_TAG` is no codec version byte, so an inline entry (a store written before
//! this file existed) and a ref tell themselves apart by their first byte; both are read.
use crate::segment_files::{Place, Segments};
use crate::types::LogId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

/// The first byte of a log tree value that is an `EntryRef` (codec versions are small numbers).
pub(crate) const REF_TAG: u8 = 0xE5;
const SEGMENT_MAGIC: &[u8; 15] = b"jobserv-rlog-sg";
/// A new segment is started once the current one holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Where an entry's body is: its segment, offset and length, with a checksum, and the entry's log id so
/// that the log's bounds and the store's checks never read a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryRef {
    pub(crate) log_id: LogId,
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl EntryRef {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, crate::codec::CodecError> {
        let body = crate::codec::encode(self)?;
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(REF_TAG);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// `None` when `value` is an inline entry rather than a ref.
    pub(crate) fn decode(value: &[u8]) -> Result<Option<EntryRef>, crate::codec::CodecError> {
        match value.split_first() {
            Some((&REF_TAG, body)) => Ok(Some(crate::codec::decode(body)?)),
            _ => Ok(None),
        }
    }
}

pub(crate) struct EntryFiles {
    segments: Segments,
    /// The highest index whose body each segment holds (a segment goes once the purge passes it).
    highest: Mutex<BTreeMap<u64, u64>>,
}

impl EntryFiles {
    /// Opens the segments in `dir` (created if missing) that `live` refs point into, deletes the others,
    /// and starts a new segment to write. Returns the first live ref, in the two newest segments, whose body
    /// does not read back whole (see the module doc), if any: older segments were synced before those.
    pub(crate) fn open(
        dir: &Path,
        live: impl IntoIterator<Item = EntryRef>,
    ) -> std::io::Result<(EntryFiles, Option<EntryRef>)> {
        Self::open_with(dir, live, SEGMENT_BYTES)
    }

    fn open_with(
        dir: &Path,
        live: impl IntoIterator<Item = EntryRef>,
        segment_bytes: u64,
    ) -> std::io::Result<(EntryFiles, Option<EntryRef>)> {
        let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
        let live: Vec<EntryRef> = live.into_iter().collect();
        for r in &live {
            let top = highest.entry(r.segment).or_insert(r.log_id.index);
            *top = (*top).max(r.log_id.index);
        }
        let (segments, existing) = Segments::open(dir, SEGMENT_MAGIC, segment_bytes, |s| {
            highest.contains_key(&s)
        })?;
        highest.retain(|s, _| existing.contains(s));
        highest.insert(segments.current(), 0);
        // Bodies not yet synced can only be in the newest segment, or the one before it when the last
        // round of appends started a new one.
        let recent: BTreeSet<u64> = existing.iter().rev().take(2).copied().collect();
        let mut newest_refs: Vec<EntryRef> = live
            .into_iter()
            .filter(|r| recent.contains(&r.segment))
            .collect();
        let files = EntryFiles {
            segments,
            highest: Mutex::new(highest),
        };
        newest_refs.sort_by_key(|r| r.log_id.index);
        let mut lost = None;
        for r in newest_refs {
            if files.read(&r).is_err() {
                lost = Some(r);
                break;
            }
        }
        Ok((files, lost))
    }

    /// Writes one entry's encoded body at the end of the current segment (not synced: `sync` does).
    pub(crate) fn append(&self, log_id: LogId, body: &[u8]) -> std::io::Result<EntryRef> {
        let place = self
            .segments
            .append(body)
            .map_err(|e| std::io::Error::other(format!("log entry {log_id}: {e}")))?;
        let mut highest = self.highest.lock().unwrap();
        let top = highest.entry(place.segment).or_insert(0);
        *top = (*top).max(log_id.index);
        Ok(EntryRef {
            log_id,
            segment: place.segment,
            offset: place.offset,
            len: place.len,
            crc: place.crc,
        })
    }

    /// Makes every body appended so far durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.segments.sync()
    }

    /// The body `r` points to, checked against its length and checksum.
    pub(crate) fn read(&self, r: &EntryRef) -> std::io::Result<Vec<u8>> {
        let place = Place {
            segment: r.segment,
            offset: r.offset,
            len: r.len,
            crc: r.crc,
        };
        self.segments
            .read(&place)
            .map_err(|e| std::io::Error::other(format!("log entry {}: {e}", r.log_id)))
    }

    /// Deletes the segments, but the one being written, whose bodies are all at or below `purged`. Called
    /// once the purge mark and the removal of the refs are durable.
    pub(crate) fn forget_through(&self, purged: u64) -> std::io::Result<()> {
        let current = self.segments.current();
        let doomed: Vec<u64> = {
            let mut highest = self.highest.lock().unwrap();
            let doomed: Vec<u64> = highest
                .iter()
                .filter(|(&s, &top)| s != current && top <= purged)
                .map(|(&s, _)| s)
                .collect();
            for s in &doomed {
                highest.remove(s);
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(());
        }
        self.segments.delete(&doomed)
    }

    #[cfg(test)]
    fn segment_numbers(&self) -> Vec<u64> {
        self.segments.numbers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment_files::{files_in, segment_path};
    use openraft::CommittedLeaderId;
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    fn lid(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn bodies_read_back_across_segments_and_purged_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let (files, lost) = EntryFiles::open_with(dir.path(), [], 100).unwrap();
        assert!(lost.is_none());
        // 60-byte bodies in segments of 100 bytes (after the 16-byte header): two bodies per segment.
        let refs: Vec<EntryRef> = (1..=6)
            .map(|i| files.append(lid(i), &[i as u8; 60]).unwrap())
            .collect();
        files.sync().unwrap();
        assert_eq!(files.segment_numbers(), [1, 2, 3]);
        for r in &refs {
            assert_eq!(files.read(r).unwrap(), vec![r.log_id.index as u8; 60]);
        }
        // Segment 1 holds 1..=2, segment 2 holds 3..=4: a purge up to 3 frees only segment 1.
        files.forget_through(3).unwrap();
        assert_eq!(files.segment_numbers(), [2, 3]);
        assert!(files.read(&refs[0]).is_err());
        assert_eq!(files.read(&refs[2]).unwrap(), vec![3u8; 60]);
        // The segment being written is never deleted, even when all its bodies are purged.
        files.forget_through(6).unwrap();
        assert_eq!(files.segment_numbers(), [3]);
        assert_eq!(files_in(dir.path()), ["0000000000000003.seg"]);
    }

    #[test]
    fn open_keeps_only_referenced_segments_and_finds_a_torn_body() {
        let dir = tempfile::tempdir().unwrap();
        let refs: Vec<EntryRef> = {
            let (files, _) = EntryFiles::open_with(dir.path(), [], 100).unwrap();
            let refs = (1..=6)
                .map(|i| files.append(lid(i), &[i as u8; 60]).unwrap())
                .collect();
            files.sync().unwrap();
            refs
        };
        // Only 3..=6 are still referenced (1..=2 were purged): segment 1 goes; a new segment 4 is started.
        let (files, lost) = EntryFiles::open_with(dir.path(), refs[2..].to_vec(), 100).unwrap();
        assert!(lost.is_none());
        assert_eq!(files.segment_numbers(), [2, 3, 4]);
        assert_eq!(files.read(&refs[5]).unwrap(), vec![6u8; 60]);
        drop(files);
        // A power loss tore the last body of segment 3 (entry 6): found on open, entry 5 is intact.
        let seg3 = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 3))
            .unwrap();
        seg3.write_all_at(b"torn", refs[5].offset + 10).unwrap();
        let (files, lost) = EntryFiles::open_with(dir.path(), refs[2..].to_vec(), 100).unwrap();
        assert_eq!(lost.map(|r| r.log_id.index), Some(6));
        assert_eq!(files.read(&refs[4]).unwrap(), vec![5u8; 60]);
        // Segment 4 held no body, so no ref points into it: gone; a new one (5) is started.
        assert_eq!(files.segment_numbers(), [2, 3, 5]);
    }

    #[test]
    fn a_ref_and_an_inline_entry_tell_themselves_apart() {
        let r = EntryRef {
            log_id: lid(7),
            segment: 2,
            offset: 16,
            len: 60,
            crc: 9,
        };
        assert_eq!(EntryRef::decode(&r.encode().unwrap()).unwrap(), Some(r));
        for version in crate::codec::MIN_READABLE_VERSION..=crate::codec::FORMAT_VERSION {
            let inline = crate::codec::encode_as(version, &lid(7)).unwrap();
            assert_eq!(EntryRef::decode(&inline).unwrap(), None);
        }
    }
}
