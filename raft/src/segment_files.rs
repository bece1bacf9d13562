//! Append-only segment files: bodies written once at the end of the current file and read back with one
//! `pread`, each checked by its length and CRC32. What the bodies are and when a segment may go is the
//! owner's business: `entry_files.rs` (Raft log entry bodies, deleted by purge) and `console_files.rs`
//! (console output, deleted once no run refers to it).
//!
//! Format: a segment starts with its owner's 15-byte magic and a version byte; bodies follow back to back.
//! Nothing is appended to a segment that existed when the directory was opened (a crash may have torn its
//! tail): `open` starts a new one.
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SEGMENT_VERSION: u8 = 1;
pub(crate) const HEADER_LEN: u64 = 16;

/// Where a body is (stored as it is by `console_files.rs`: a wire and storage format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Place {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

struct Writer {
    current: u64,
    file: Arc<File>,
    len: u64,
    /// Segments written to since the last `sync`.
    unsynced: BTreeSet<u64>,
}

pub(crate) struct Segments {
    dir: PathBuf,
    magic: &'static [u8; 15],
    segment_bytes: u64,
    writer: Mutex<Writer>,
    /// Every segment file, open for reading (an `Arc` so that a reader keeps a deleted file readable).
    files: Mutex<BTreeMap<u64, Arc<File>>>,
}

fn segment_name(segment: u64) -> String {
    format!("{segment:016}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl Segments {
    /// Opens the segments in `dir` (created if missing) for which `keep` says yes, deletes the others, and
    /// starts a new segment to write. Also returns the numbers of the segments that existed.
    pub(crate) fn open(
        dir: &Path,
        magic: &'static [u8; 15],
        segment_bytes: u64,
        keep: impl Fn(u64) -> bool,
    ) -> std::io::Result<(Segments, BTreeSet<u64>)> {
        std::fs::create_dir_all(dir)?;
        let mut existing = BTreeSet::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            if let Some(segment) = item.file_name().to_str().and_then(parse_segment_name) {
                existing.insert(segment);
            }
        }
        let mut files = BTreeMap::new();
        for &segment in &existing {
            let path = dir.join(segment_name(segment));
            if keep(segment) {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                check_header(&file, &path, magic)?;
                files.insert(segment, Arc::new(file));
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        let first = existing.last().map_or(1, |n| n + 1);
        let file = Arc::new(create_segment(dir, first, magic)?);
        files.insert(first, file.clone());
        let segments = Segments {
            dir: dir.to_path_buf(),
            magic,
            segment_bytes,
            writer: Mutex::new(Writer {
                current: first,
                file,
                len: HEADER_LEN,
                unsynced: BTreeSet::new(),
            }),
            files: Mutex::new(files),
        };
        Ok((segments, existing))
    }

    /// Writes `body` at the end of the current segment (not synced: `sync` does).
    pub(crate) fn append(&self, body: &[u8]) -> std::io::Result<Place> {
        let len = u32::try_from(body.len())
            .map_err(|_| std::io::Error::other(format!("a body of {} bytes", body.len())))?;
        let mut w = self.writer.lock().unwrap();
        if w.len >= self.segment_bytes {
            let next = w.current + 1;
            let file = Arc::new(create_segment(&self.dir, next, self.magic)?);
            self.files.lock().unwrap().insert(next, file.clone());
            w.current = next;
            w.file = file;
            w.len = HEADER_LEN;
        }
        let offset = w.len;
        w.file.write_all_at(body, offset)?;
        w.len += body.len() as u64;
        let segment = w.current;
        w.unsynced.insert(segment);
        Ok(Place {
            segment,
            offset,
            len,
            crc: crc32fast::hash(body),
        })
    }

    /// The segment being written.
    pub(crate) fn current(&self) -> u64 {
        self.writer.lock().unwrap().current
    }

    /// Makes every body appended so far durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let unsynced: Vec<u64> = std::mem::take(&mut self.writer.lock().unwrap().unsynced)
            .into_iter()
            .collect();
        let files: Vec<Arc<File>> = {
            let files = self.files.lock().unwrap();
            unsynced
                .iter()
                .filter_map(|s| files.get(s).cloned())
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

    /// The body at `place`, checked against its length and checksum. Errors name the segment and offset;
    /// the caller says whose body it was.
    pub(crate) fn read(&self, place: &Place) -> std::io::Result<Vec<u8>> {
        let file = self
            .files
            .lock()
            .unwrap()
            .get(&place.segment)
            .cloned()
            .ok_or_else(|| std::io::Error::other(format!("segment {} is gone", place.segment)))?;
        let mut body = vec![0u8; place.len as usize];
        file.read_exact_at(&mut body, place.offset).map_err(|e| {
            std::io::Error::other(format!(
                "segment {}, offset {}, {} bytes: {e}",
                place.segment, place.offset, place.len
            ))
        })?;
        if crc32fast::hash(&body) != place.crc {
            return Err(std::io::Error::other(format!(
                "segment {}, offset {}: checksum mismatch",
                place.segment, place.offset
            )));
        }
        Ok(body)
    }

    /// Deletes the segments in `doomed`, but never the one being written.
    pub(crate) fn delete(&self, doomed: &[u64]) -> std::io::Result<()> {
        let current = self.current();
        let mut deleted = false;
        for &segment in doomed.iter().filter(|&&s| s != current) {
            if self.files.lock().unwrap().remove(&segment).is_some() {
                std::fs::remove_file(self.dir.join(segment_name(segment)))?;
                deleted = true;
            }
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The segments there are, in order.
    pub(crate) fn numbers(&self) -> Vec<u64> {
        self.files.lock().unwrap().keys().copied().collect()
    }
}

fn check_header(file: &File, path: &Path, magic: &[u8; 15]) -> std::io::Result<()> {
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    if &header[..magic.len()] != magic {
        return Err(std::io::Error::other(format!(
            "{}: not a segment of this kind (expected it to start with {:?})",
            path.display(),
            String::from_utf8_lossy(magic)
        )));
    }
    let version = header[magic.len()];
    if version != SEGMENT_VERSION {
        return Err(std::io::Error::other(format!(
            "{}: segment format {version}, this binary reads {SEGMENT_VERSION}",
            path.display()
        )));
    }
    Ok(())
}

/// A new segment with its header, its name durable in `dir` (the bodies' fsync does not cover the name).
fn create_segment(dir: &Path, segment: u64, magic: &[u8; 15]) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(segment_name(segment)))?;
    let mut header = [0u8; HEADER_LEN as usize];
    header[..magic.len()].copy_from_slice(magic);
    header[magic.len()] = SEGMENT_VERSION;
    file.write_all_at(&header, 0)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(segment_name(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 15] = b"jobserv-test-sg";

    #[test]
    fn a_segment_of_another_kind_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(Segments::open(dir.path(), MAGIC, 100, |_| true).unwrap());
        let Err(e) = Segments::open(dir.path(), b"jobserv-othr-sg", 100, |_| true) else {
            panic!("a segment with another magic was opened");
        };
        assert!(e.to_string().contains("not a segment of this kind"), "{e}");
    }

    #[test]
    fn the_segment_being_written_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, existing) = Segments::open(dir.path(), MAGIC, 100, |_| true).unwrap();
        assert!(existing.is_empty());
        let a = segments.append(&[1; 90]).unwrap();
        let b = segments.append(&[2; 90]).unwrap();
        assert_eq!((a.segment, b.segment), (1, 2));
        segments.delete(&[1, 2]).unwrap();
        assert_eq!(segments.numbers(), [2]);
        assert_eq!(segments.read(&b).unwrap(), vec![2; 90]);
        assert!(segments.read(&a).unwrap_err().to_string().contains("gone"));
    }
}
