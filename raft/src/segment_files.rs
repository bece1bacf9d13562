//! Append-only segment files: bodies written once at the end of the current file and read back with one
//! `pread`, each checked by its length and CRC32. What the bodies are and when a segment may go is the
//! owner's business: `entry_files.rs` (Raft log entry bodies, deleted by purge) and `console_files.rs`
//! (console output, deleted once no run refers to it).
//!
//! Format: a segment starts with its owner's 15-byte magic and a version byte; bodies follow back to back.
//! Nothing is appended to a segment that existed when the directory was opened (a crash may have torn its
//! tail): `open` starts a new one.
//!
//! Page cache: after a sync, bytes older than the newest `HOT_BYTES` of the current segment (and the whole
//! of a segment the writer has left) are dropped from the page cache (`POSIX_FADV_DONTNEED`). They are
//! durable and rarely read again (a catch-up, a finished run's console, a snapshot build read them from
//! disk), while new page-cache pages are what a write stream pays most for on a VM: `cluster-test
//! bench-logs` spent about a third of all CPU in the kernel's copy into fresh pages
//! (`copy_folio_from_iter_atomic`); a page freed this way is reused by the next write at once.
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SEGMENT_VERSION: u8 = 1;
/// The newest bytes of the current segment kept in the page cache after a sync: what replication (the
/// entries just appended) and live console tails (the chunks just applied) read next.
const HOT_BYTES: u64 = 16 << 20;
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
    /// Segments written to since the last `sync` (and one the writer just left, so that its sync drops it
    /// from the page cache whole).
    unsynced: BTreeSet<u64>,
    /// Bytes of the current segment below this offset were dropped from the page cache.
    cold_upto: u64,
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
                cold_upto: 0,
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
            let left = w.current;
            w.unsynced.insert(left);
            w.current = next;
            w.file = file;
            w.len = HEADER_LEN;
            w.cold_upto = 0;
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
        let (unsynced, current, synced_len) = {
            let mut w = self.writer.lock().unwrap();
            (std::mem::take(&mut w.unsynced), w.current, w.len)
        };
        let files: Vec<(u64, Arc<File>)> = {
            let files = self.files.lock().unwrap();
            unsynced
                .iter()
                .filter_map(|&s| files.get(&s).map(|f| (s, f.clone())))
                .collect()
        };
        for (_, file) in &files {
            if let Err(e) = file.sync_data() {
                // Not synced: the next round must try these again.
                self.writer.lock().unwrap().unsynced.extend(unsynced);
                return Err(e);
            }
        }
        for (segment, file) in &files {
            if *segment != current {
                drop_from_page_cache(file, 0, 0); // the writer has left it: the whole file
            } else if let Some((from, to)) = self.newly_cold(current, synced_len) {
                drop_from_page_cache(file, from, to - from);
            }
        }
        Ok(())
    }

    /// The bytes of `segment`, synced up to `synced_len`, that fell out of the hot window since the last
    /// sync (and marks them dropped); none if the writer has left the segment meanwhile (its next sync
    /// drops it whole).
    fn newly_cold(&self, segment: u64, synced_len: u64) -> Option<(u64, u64)> {
        let hot_from = synced_len.saturating_sub(HOT_BYTES);
        let mut w = self.writer.lock().unwrap();
        if w.current != segment || hot_from <= w.cold_upto {
            return None;
        }
        Some((std::mem::replace(&mut w.cold_upto, hot_from), hot_from))
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

/// Advises the kernel to drop `len` bytes of `file` from `offset` (0: to the end) from the page cache. Only
/// advice: the bytes are synced, and a failure costs nothing but the page cache it would have freed.
fn drop_from_page_cache(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor that `file` keeps open for its duration.
    let _ =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
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

    /// A temporary folder on the disk the build is on (`/tmp` may be a tmpfs, whose pages never leave memory).
    fn disk_tempdir() -> tempfile::TempDir {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&target).unwrap();
        tempfile::tempdir_in(target).unwrap()
    }

    /// Which of `file`'s first `len` bytes' pages are in the page cache (`mincore` of a mapping that
    /// touches none of them).
    fn resident_pages(file: &File, len: usize) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let page = 4096;
        let mut residency = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file, never dereferenced; unmapped before return.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, residency.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        residency.iter().map(|r| r & 1 == 1).collect()
    }

    #[test]
    fn a_sync_drops_all_but_the_newest_bytes_from_the_page_cache() {
        let dir = disk_tempdir();
        let (segments, _) = Segments::open(dir.path(), MAGIC, 1 << 30, |_| true).unwrap();
        let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let places: Vec<Place> = (0..40).map(|_| segments.append(&mib).unwrap()).collect();
        let len = HEADER_LEN as usize + 40 * mib.len();
        let file = File::open(segment_path(dir.path(), 1)).unwrap();
        assert!(
            resident_pages(&file, len).iter().all(|&r| r),
            "written, not yet synced: every page is in the cache"
        );
        segments.sync().unwrap();
        let resident = resident_pages(&file, len);
        // The page holding the window's first byte is partly hot: it may go either way.
        let boundary = len - HOT_BYTES as usize;
        let cold = resident[..boundary / 4096].iter().filter(|&&r| r).count();
        assert_eq!(
            cold, 0,
            "pages older than the hot window still cached after the sync"
        );
        assert!(
            resident[boundary.div_ceil(4096)..].iter().all(|&r| r),
            "the newest HOT_BYTES must stay cached"
        );
        // A second sync with nothing new changes nothing; the bytes read back from the disk.
        segments.sync().unwrap();
        for place in &places {
            assert_eq!(segments.read(place).unwrap(), mib);
        }
    }

    #[test]
    fn a_segment_the_writer_left_leaves_the_page_cache_whole() {
        let dir = disk_tempdir();
        let (segments, _) = Segments::open(dir.path(), MAGIC, 8 << 20, |_| true).unwrap();
        let mib = vec![9u8; 1 << 20];
        for _ in 0..8 {
            segments.append(&mib).unwrap();
        }
        // Synced while it is still the current one: only what is older than the hot window could go.
        segments.sync().unwrap();
        let first = File::open(segment_path(dir.path(), 1)).unwrap();
        let len = HEADER_LEN as usize + 8 * mib.len();
        assert!(resident_pages(&first, len).iter().all(|&r| r));
        let next = segments.append(&mib).unwrap();
        assert_eq!(next.segment, 2);
        segments.sync().unwrap();
        assert!(
            resident_pages(&first, len).iter().all(|&r| !r),
            "the segment left behind must leave the page cache once synced"
        );
    }
}
