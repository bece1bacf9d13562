//! The content-addressed blob store on this node's disk: `DATA_DIR/blobs/<2 hex>/<sha256>`. A blob is
//! written to `tmp/` while its hash is computed, fsync'd, and renamed into place only when complete (and,
//! when the caller knows it, only when the hash matches): a reader never sees a partial blob, and an
//! interrupted write leaves only a temporary file, removed at once or by the next start.
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Bytes buffered before a write to the file (actix hands the body over in small pieces).
const WRITE_BUFFER: usize = 1 << 20;
/// Chunks queued between the network and the hashing/writing thread.
const QUEUE: usize = 8;
/// Small network chunks (a TLS record is at most 16 KiB) are gathered up to this before they cross to the
/// writing thread: one hand-off per 256 KiB instead of per record (measured: per-record hand-offs held a
/// 2 GiB upload to 39 MiB/s with the CPUs mostly idle).
pub const GATHER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the bytes received hash to {got}, not {expected}")]
    HashMismatch { expected: String, got: String },
    #[error("the blob writer stopped: {0}")]
    Writer(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A blob that is complete on this node's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone)]
pub struct LocalBlobs {
    root: PathBuf,
    /// Taken to move a blob into place and to delete one, so the collector never deletes a blob that an
    /// upload has just (re)written (it re-checks the blob's age under the lock).
    place: Arc<Mutex<()>>,
}

impl LocalBlobs {
    /// Opens (creating) `dir`; temporary files of a previous life are removed (no write is in flight yet).
    pub fn open(dir: &Path) -> Result<LocalBlobs, BlobError> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(LocalBlobs {
            root: dir.to_path_buf(),
            place: Arc::new(Mutex::new(())),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2.min(sha256.len())]).join(sha256)
    }

    /// The size of blob `sha256` if this node holds it.
    pub fn size(&self, sha256: &str) -> Option<u64> {
        std::fs::metadata(self.path(sha256)).ok().map(|m| m.len())
    }

    /// Starts writing a new blob; see [`BlobWriter`].
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let path = tmp.clone();
        // Hashing and writing run on a blocking thread, beside the network task that receives the bytes.
        let task = tokio::task::spawn_blocking(move || -> Result<Received, BlobError> {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
            let mut flushed_to = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                out.write_all(&chunk).map_err(io_err(&path))?;
                if size - flushed_to >= WRITEBACK_STEP {
                    // Start writing back what is behind us now, without waiting for it: the fsync at the
                    // end then has little left, instead of the whole blob (measured: the final fsync of
                    // three 1 GiB copies on one disk was most of an upload's time).
                    out.flush().map_err(io_err(&path))?;
                    start_writeback(out.get_ref(), flushed_to, size - flushed_to);
                    flushed_to = size;
                }
            }
            let file = out
                .into_inner()
                .map_err(|e| io_err(&path)(e.into_error()))?;
            file.sync_all().map_err(io_err(&path))?;
            Ok(Received {
                sha256: hex::encode(hasher.finalize()),
                size,
            })
        });
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            tx: Some(tx),
            task: Some(task),
            written: 0,
            gathered: bytes::BytesMut::new(),
        })
    }

    /// Removes blob `sha256` if it is older than `min_age` (the collector's rule).
    pub fn remove_if_older(&self, sha256: &str, min_age: Duration) -> bool {
        let _guard = self.place.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(sha256);
        let old_enough = age(&path).is_some_and(|a| a >= min_age);
        old_enough && std::fs::remove_file(&path).is_ok()
    }

    /// Every blob this node holds, by hash.
    pub fn list(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().to_string();
            if name.len() != 2 {
                continue; // tmp/
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let sha = f.file_name().to_string_lossy().to_string();
                if jobserv_raft::state::validate_sha256(&sha).is_ok() {
                    out.push(sha);
                }
            }
        }
        out.sort();
        out
    }

    /// Temporary files older than `min_age` (left by a writer that never finished): removed.
    pub fn sweep_tmp(&self, min_age: Duration) -> usize {
        let mut removed = 0;
        if let Ok(files) = std::fs::read_dir(self.root.join("tmp")) {
            for f in files.flatten() {
                if age(&f.path()).is_some_and(|a| a >= min_age)
                    && std::fs::remove_file(f.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Temporary files now (a test's view of partial uploads).
    pub fn tmp_count(&self) -> usize {
        std::fs::read_dir(self.root.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn place(&self, tmp: &Path, sha256: &str) -> Result<(), BlobError> {
        let target = self.path(sha256);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let _guard = self.place.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::rename(tmp, &target).map_err(io_err(&target))?;
        // The rename is durable only once the directory is.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }
}

/// Bytes written between two starts of background writeback.
const WRITEBACK_STEP: u64 = 16 << 20;

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and a range of it; SYNC_FILE_RANGE_WRITE only starts writeback.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

/// A blob being written: feed it with [`BlobWriter::write`], then [`BlobWriter::finish`]. Dropped unfinished
/// (the upload was cut off, a limit was hit), it removes its temporary file: nothing partial remains.
pub struct BlobWriter {
    store: LocalBlobs,
    tmp: PathBuf,
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<Result<Received, BlobError>>>,
    written: u64,
    gathered: bytes::BytesMut,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.written += chunk.len() as u64;
        if self.gathered.is_empty() && chunk.len() >= GATHER {
            return self.send(chunk).await;
        }
        self.gathered.extend_from_slice(&chunk);
        if self.gathered.len() >= GATHER {
            let full = self.gathered.split().freeze();
            return self.send(full).await;
        }
        Ok(())
    }

    async fn send(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writing thread stopped: its error says why.
        self.tx = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(BlobError::Writer("stopped early".into())),
                Err(e) => Err(BlobError::Writer(e.to_string())),
            },
            None => Err(BlobError::Writer("already failed".into())),
        }
    }

    /// Completes the blob: fsync'd, checked against `expected` when given, moved into place.
    pub async fn finish(mut self, expected: Option<&str>) -> Result<Received, BlobError> {
        if !self.gathered.is_empty() {
            let rest = self.gathered.split().freeze();
            self.send(rest).await?;
        }
        self.tx = None;
        let task = self
            .task
            .take()
            .ok_or_else(|| BlobError::Writer("already failed".into()))?;
        let received = task.await.map_err(|e| BlobError::Writer(e.to_string()))??;
        if let Some(expected) = expected {
            if expected != received.sha256 {
                return Err(BlobError::HashMismatch {
                    expected: expected.to_string(),
                    got: received.sha256,
                });
            }
        }
        let store = self.store.clone();
        let tmp = self.tmp.clone();
        let sha = received.sha256.clone();
        tokio::task::spawn_blocking(move || store.place(&tmp, &sha))
            .await
            .map_err(|e| BlobError::Writer(e.to_string()))??;
        Ok(received)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Finished: the file was renamed away and this fails harmlessly. Not finished: the partial file goes
        // (the writing thread, if still running, ends when it sees the channel closed).
        self.tx = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_placed_only_when_complete_and_matching() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        let got = w.finish(None).await.unwrap();
        let expected = hex::encode(Sha256::digest(b"hello world"));
        assert_eq!(
            got,
            Received {
                sha256: expected.clone(),
                size: 11
            }
        );
        assert_eq!(
            std::fs::read(store.path(&expected)).unwrap(),
            b"hello world"
        );
        assert_eq!(store.list(), vec![expected.clone()]);

        // A wrong expected hash leaves nothing behind.
        let mut w = store.writer().unwrap();
        w.write(Bytes::from_static(b"other")).await.unwrap();
        let err = w.finish(Some(&expected)).await.unwrap_err();
        assert!(matches!(err, BlobError::HashMismatch { .. }), "{err}");
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.tmp_count(), 0);

        // An abandoned writer (upload cut off) removes its partial file.
        let mut w = store.writer().unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        assert_eq!(store.tmp_count(), 1);
        drop(w);
        assert_eq!(store.tmp_count(), 0);
        assert_eq!(store.list().len(), 1);

        // The collector removes only blobs old enough.
        assert!(!store.remove_if_older(&expected, Duration::from_secs(3600)));
        assert!(store.remove_if_older(&expected, Duration::ZERO));
        assert!(store.list().is_empty());
    }
}
