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
use crate::types::LogId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first byte of a log tree value that is an `EntryRef` (codec versions are small numbers).
pub(crate) const REF_TAG: u8 = 0xE5;
const SEGMENT_MAGIC: &[u8; 15] = b"jobserv-rlog-sg";
const SEGMENT_VERSION: u8 = 1;
const HEADER_LEN: u64 = 16;
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

struct Writer {
    current: u64,
    file: Arc<File>,
    len: u64,
    /// Segments written to since the last `sync`.
    unsynced: BTreeSet<u64>,
}

pub(crate) struct EntryFiles {
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// Every segment file, open for reading; and the highest index whose body each one holds.
    segments: Mutex<BTreeMap<u64, (Arc<File>, u64)>>,
}

fn segment_name(segment: u64) -> String {
    format!("{segment:016}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
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
        std::fs::create_dir_all(dir)?;
        let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
        let mut newest_refs: Vec<EntryRef> = Vec::new();
        let mut existing = BTreeSet::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            if let Some(segment) = item.file_name().to_str().and_then(parse_segment_name) {
                existing.insert(segment);
            }
        }
        let newest = existing.last().copied();
        // Bodies not yet synced can only be in the newest segment, or the one before it when the last
        // round of appends started a new one.
        let recent: BTreeSet<u64> = existing.iter().rev().take(2).copied().collect();
        for r in live {
            let top = highest.entry(r.segment).or_insert(r.log_id.index);
            *top = (*top).max(r.log_id.index);
            if recent.contains(&r.segment) {
                newest_refs.push(r);
            }
        }
        let mut segments = BTreeMap::new();
        for &segment in &existing {
            let path = dir.join(segment_name(segment));
            match highest.get(&segment) {
                Some(&top) => {
                    let file = OpenOptions::new().read(true).write(true).open(&path)?;
                    check_header(&file, &path)?;
                    segments.insert(segment, (Arc::new(file), top));
                }
                None => std::fs::remove_file(&path)?,
            }
        }
        // Never append to a segment a crash may have left with a torn tail: start a new one.
        let first = newest.map_or(1, |n| n + 1);
        let file = Arc::new(create_segment(dir, first)?);
        segments.insert(first, (file.clone(), 0));
        let files = EntryFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            writer: Mutex::new(Writer {
                current: first,
                file,
                len: HEADER_LEN,
                unsynced: BTreeSet::new(),
            }),
            segments: Mutex::new(segments),
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

    fn start_segment(&self, w: &mut Writer, segment: u64) -> std::io::Result<()> {
        let file = Arc::new(create_segment(&self.dir, segment)?);
        w.current = segment;
        w.file = file.clone();
        w.len = HEADER_LEN;
        self.segments.lock().unwrap().insert(segment, (file, 0));
        Ok(())
    }

    /// Writes one entry's encoded body at the end of the current segment (not synced: `sync` does).
    pub(crate) fn append(&self, log_id: LogId, body: &[u8]) -> std::io::Result<EntryRef> {
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other(format!("a log entry of {} bytes", body.len())))?;
        let mut w = self.writer.lock().unwrap();
        if w.len >= self.segment_bytes {
            let next = w.current + 1;
            self.start_segment(&mut w, next)?;
        }
        let offset = w.len;
        w.file.write_all_at(body, offset)?;
        w.len += body.len() as u64;
        let segment = w.current;
        w.unsynced.insert(segment);
        if let Some((_, top)) = self.segments.lock().unwrap().get_mut(&segment) {
            *top = (*top).max(log_id.index);
        }
        Ok(EntryRef {
            log_id,
            segment,
            offset,
            len,
            crc: crc32fast::hash(body),
        })
    }

    /// Makes every body appended so far durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let unsynced: Vec<u64> = std::mem::take(&mut self.writer.lock().unwrap().unsynced)
            .into_iter()
            .collect();
        let files: Vec<Arc<File>> = {
            let segments = self.segments.lock().unwrap();
            unsynced
                .iter()
                .filter_map(|s| segments.get(s).map(|(f, _)| f.clone()))
                .collect()
        };
        for file in files {
            if let Err(e) = file.sync_data() {
                // Not synced: the next round must try these again.
                self.writer.lock().unwrap().unsynced.extend(unsynced);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The body `r` points to, checked against its length and checksum.
    pub(crate) fn read(&self, r: &EntryRef) -> std::io::Result<Vec<u8>> {
        let file = self
            .segments
            .lock()
            .unwrap()
            .get(&r.segment)
            .map(|(f, _)| f.clone())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "log entry {}: its segment {} is gone",
                    r.log_id, r.segment
                ))
            })?;
        let mut body = vec![0u8; r.len as usize];
        file.read_exact_at(&mut body, r.offset).map_err(|e| {
            std::io::Error::other(format!(
                "log entry {} (segment {}, offset {}, {} bytes): {e}",
                r.log_id, r.segment, r.offset, r.len
            ))
        })?;
        if crc32fast::hash(&body) != r.crc {
            return Err(std::io::Error::other(format!(
                "log entry {} (segment {}, offset {}): checksum mismatch",
                r.log_id, r.segment, r.offset
            )));
        }
        Ok(body)
    }

    /// Deletes the segments, but the one being written, whose bodies are all at or below `purged`. Called
    /// once the purge mark and the removal of the refs are durable.
    pub(crate) fn forget_through(&self, purged: u64) -> std::io::Result<()> {
        let current = self.writer.lock().unwrap().current;
        let doomed: Vec<u64> = self
            .segments
            .lock()
            .unwrap()
            .iter()
            .filter(|(&s, (_, top))| s != current && *top <= purged)
            .map(|(&s, _)| s)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for segment in &doomed {
            self.segments.lock().unwrap().remove(segment);
            std::fs::remove_file(self.dir.join(segment_name(*segment)))?;
        }
        sync_dir(&self.dir)
    }

    #[cfg(test)]
    fn segment_numbers(&self) -> Vec<u64> {
        self.segments.lock().unwrap().keys().copied().collect()
    }
}

fn check_header(file: &File, path: &Path) -> std::io::Result<()> {
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    if &header[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Err(std::io::Error::other(format!(
            "{}: not a log segment",
            path.display()
        )));
    }
    let version = header[SEGMENT_MAGIC.len()];
    if version != SEGMENT_VERSION {
        return Err(std::io::Error::other(format!(
            "{}: log segment format {version}, this binary reads {SEGMENT_VERSION}",
            path.display()
        )));
    }
    Ok(())
}

/// A new segment with its header, its name durable in `dir` (the bodies' fsync does not cover the name).
fn create_segment(dir: &Path, segment: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(segment_name(segment)))?;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..SEGMENT_MAGIC.len()].copy_from_slice(SEGMENT_MAGIC);
    header[SEGMENT_MAGIC.len()] = SEGMENT_VERSION;
    file.write_all_at(&header, 0)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn lid(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
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
            .open(dir.path().join(segment_name(3)))
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
