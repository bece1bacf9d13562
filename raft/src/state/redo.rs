//! Committing a group's writes atomically without a sled batch. A sled `Batch` costs two disk writes of its
//! own (`apply_batch` pins sled's log: it writes the IO buffer out, then the batch's manifest alone, each with
//! a `sync_file_range`), and the state machine commits a group on every node for every few entries.
//!
//! Instead a commit writes, in this order: a redo record holding every write of the group (in a tree of
//! its own), the writes themselves (`apply_batch_unpinned`: readers see all of them or none), and the
//! record's removal. sled's recovery replays its log up to the first torn message, so a crash keeps a
//! prefix of those steps: nothing, or the record and some of the writes (`State::open` then makes the
//! writes again, which is idempotent: they are values, not changes), or everything.
//!
//! A record must stay below sled's blob threshold (a quarter of its 512 KiB segment, 131,020 bytes with
//! the message header): above it a value goes to a file of its own, created (and later deleted) per
//! commit, and a lost blob file is skipped silently by sled's recovery. Bigger groups (a log flood's raw
//! console) take the pinned batch instead.
//!
//! A record older than the tree (its `last_applied` below the tree's) is dropped, not replayed: it can
//! only be left by a crash under this binary followed by a run of an older one, which ignores records
//! (`docs/operations.md`, downgrades).
use super::txn::Write;
use super::{keys, State, StateResult, StateStoreError};
use crate::codec;
use crate::types::LogId;

/// The redo record's key in the redo tree.
const REDO_KEY: &[u8] = b"commit";
/// The record's format: this byte, the write count, then each write as key length, key, 0 (remove) or 1
/// (set), value length, value; lengths and count are little-endian u32.
const REDO_FORMAT: u8 = 1;
/// Groups whose record would be longer than this commit in a pinned sled batch (a margin below sled's
/// 131,020-byte blob threshold).
pub const REDO_MAX_BYTES: usize = 120 * 1024;

impl State {
    /// Makes `writes` (distinct keys) all at once: readers, and a restart after a crash, see all of them
    /// or none.
    pub(super) fn write_atomically(&self, writes: Vec<Write>) -> StateResult<()> {
        if writes.len() <= 1 {
            // One write is atomic on its own.
            for (key, value) in writes {
                match value {
                    Some(v) => self.tree.insert(key, v)?,
                    None => self.tree.remove(key)?,
                };
            }
            return Ok(());
        }
        let record_len = record_len(&writes);
        if record_len > REDO_MAX_BYTES {
            self.tree.apply_batch(to_batch(writes))?;
            return Ok(());
        }
        self.redo
            .insert(REDO_KEY, encode_redo(&writes, record_len))?;
        // A crash keeps a prefix of these, in this order; the record covers any prefix.
        self.tree.apply_batch_unpinned(
            writes
                .into_iter()
                .map(|(key, value)| (key, value.map(sled::IVec::from))),
        )?;
        self.redo.remove(REDO_KEY)?;
        Ok(())
    }

    /// Makes the writes of a commit a crash interrupted (see the module's doc); how many there were.
    pub(super) fn finish_interrupted_commit(&self) -> StateResult<usize> {
        let Some(record) = self.redo.get(REDO_KEY)? else {
            return Ok(0);
        };
        let writes = decode_redo(&record)?;
        let recorded = writes.iter().find(|(key, _)| key == keys::LAST_APPLIED);
        if let (Some(recorded), Some(current)) = (
            decode_applied(recorded.and_then(|(_, value)| value.as_deref()))?,
            decode_applied(self.tree.get(keys::LAST_APPLIED)?.as_deref())?,
        ) {
            // Equal is replayed: a prefix of the writes may hold the new `last_applied` already.
            if recorded.index < current.index {
                tracing::warn!(
                    record = %recorded,
                    tree = %current,
                    "dropped a redo record older than the state (an older binary ran since the crash)"
                );
                self.redo.remove(REDO_KEY)?;
                self.tree.flush()?;
                return Ok(0);
            }
        }
        let count = writes.len();
        // Pinned: a crash now leaves the record, and the next open makes the writes again.
        self.tree.apply_batch(to_batch(writes))?;
        self.redo.remove(REDO_KEY)?;
        self.tree.flush()?;
        Ok(count)
    }
}

/// A stored `last_applied` value, if there is one.
fn decode_applied(value: Option<&[u8]>) -> StateResult<Option<LogId>> {
    match value {
        Some(v) => Ok(codec::decode::<Option<LogId>>(v)?),
        None => Ok(None),
    }
}

pub(super) fn to_batch(writes: Vec<Write>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
    batch
}

/// The length of `writes`' record.
fn record_len(writes: &[Write]) -> usize {
    5 + writes
        .iter()
        .map(|(k, v)| 5 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum::<usize>()
}

/// `writes`' record; `len` is its `record_len`.
fn encode_redo(writes: &[Write], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.push(REDO_FORMAT);
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (key, value) in writes {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn decode_redo(record: &[u8]) -> StateResult<Vec<Write>> {
    let mut reader = RedoReader {
        record,
        rest: record,
    };
    match reader.take(1)?[0] {
        REDO_FORMAT => {}
        other => {
            return Err(StateStoreError::Redo(format!(
                "format {other}; this node reads format {REDO_FORMAT}"
            )))
        }
    }
    let count = reader.len()?;
    let mut writes = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let key_len = reader.len()?;
        let key = reader.take(key_len)?.to_vec();
        let value = match reader.take(1)?[0] {
            0 => None,
            1 => {
                let value_len = reader.len()?;
                Some(reader.take(value_len)?.to_vec())
            }
            other => return Err(reader.corrupt(&format!("write kind {other}"))),
        };
        writes.push((key, value));
    }
    if !reader.rest.is_empty() {
        return Err(reader.corrupt("bytes after the last write"));
    }
    Ok(writes)
}

struct RedoReader<'a> {
    record: &'a [u8],
    rest: &'a [u8],
}

impl<'a> RedoReader<'a> {
    fn corrupt(&self, what: &str) -> StateStoreError {
        StateStoreError::Redo(format!(
            "{what} at byte {} of {}",
            self.record.len() - self.rest.len(),
            self.record.len()
        ))
    }

    fn take(&mut self, n: usize) -> StateResult<&'a [u8]> {
        if self.rest.len() < n {
            return Err(self.corrupt(&format!("{n} bytes expected, the record ends")));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn len(&mut self) -> StateResult<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(tag: &str, n: usize) -> Vec<Write> {
        (0..n)
            .map(|i| {
                let value = (i % 5 != 4).then(|| format!("{tag}-{i}").into_bytes());
                (format!("k/{i:04}").into_bytes(), value)
            })
            .collect()
    }

    fn contents(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
            .collect()
    }

    /// Opens the store at `path`, waiting for a moment if the previous `Db` on it still holds sled's file
    /// lock: a task on sled's IO pool may keep the file open briefly after the `Db` was dropped (one open
    /// in ten failed with `WouldBlock` in a loop of this test).
    fn open(path: &std::path::Path) -> (sled::Db, State) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    assert!(std::time::Instant::now() < deadline, "sled: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("sled: {e}"),
            }
        };
        let state = State::open(&db, "state", None).expect("state");
        (db, state)
    }

    #[test]
    fn a_record_reads_back_as_the_writes_and_a_damaged_one_is_refused_by_name() {
        let group = writes("a", 12);
        let record = encode_redo(&group, record_len(&group));
        assert_eq!(record.len(), record_len(&group));
        assert_eq!(decode_redo(&record).expect("decode"), group);
        let truncated = decode_redo(&record[..record.len() - 3]).unwrap_err();
        assert!(
            truncated.to_string().contains("the record ends"),
            "{truncated}"
        );
        let mut other_format = record.clone();
        other_format[0] = REDO_FORMAT + 1;
        let refused = decode_redo(&other_format).unwrap_err();
        assert!(refused.to_string().contains("format 2"), "{refused}");
        let mut longer = record;
        longer.push(0);
        assert!(decode_redo(&longer).is_err());
    }

    /// A crash after the record and some of the writes (any prefix of them, as sled's recovery keeps):
    /// opening the state makes the rest, removes the record, and the tree is what the whole commit makes.
    #[test]
    fn opening_finishes_a_commit_a_crash_interrupted_after_any_prefix_of_its_writes() {
        let group = writes("new", 20);
        let expected = {
            let dir = tempfile::tempdir().expect("dir");
            let (_db, state) = open(dir.path());
            state.write_atomically(writes("old", 20)).expect("commit");
            state.write_atomically(group.clone()).expect("commit");
            assert!(state.redo.is_empty(), "a finished commit leaves its record");
            contents(&state.tree)
        };
        for made in [0, 1, 7, 19, 20] {
            let dir = tempfile::tempdir().expect("dir");
            {
                let (db, state) = open(dir.path());
                state.write_atomically(writes("old", 20)).expect("commit");
                // The interrupted commit: its record, then only the first `made` of its writes.
                state
                    .redo
                    .insert(REDO_KEY, encode_redo(&group, record_len(&group)))
                    .expect("record");
                let prefix = group[..made].to_vec();
                state.tree.apply_batch(to_batch(prefix)).expect("prefix");
                db.flush().expect("flush");
            }
            let (_db, state) = open(dir.path());
            assert!(
                contents(&state.tree) == expected,
                "after {made} of the writes, opening did not finish the commit"
            );
            assert!(state.redo.is_empty(), "the record is left after {made}");
        }
    }

    fn applied(index: u64) -> Write {
        let id = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index));
        (
            keys::LAST_APPLIED.to_vec(),
            Some(codec::encode(&id).expect("encode")),
        )
    }

    /// A record left by a crash, then an older binary (which ignores records) applied more: replaying it
    /// would move the state back, so it is dropped. A record at the tree's own `last_applied` (a prefix of
    /// its writes included the new one) is replayed.
    #[test]
    fn a_record_older_than_the_state_is_dropped_and_one_at_its_last_applied_is_replayed() {
        for (recorded, replayed) in [(9, false), (10, true)] {
            let dir = tempfile::tempdir().expect("dir");
            {
                let (db, state) = open(dir.path());
                state
                    .write_atomically(vec![applied(10), (b"k/x".to_vec(), Some(b"now".to_vec()))])
                    .expect("commit");
                let stale = vec![
                    applied(recorded),
                    (b"k/x".to_vec(), Some(b"record".to_vec())),
                ];
                state
                    .redo
                    .insert(REDO_KEY, encode_redo(&stale, record_len(&stale)))
                    .expect("record");
                db.flush().expect("flush");
            }
            let (_db, state) = open(dir.path());
            let x = state.tree.get(b"k/x").expect("read").expect("k/x");
            let want: &[u8] = if replayed { b"record" } else { b"now" };
            assert_eq!(&x[..], want, "record at {recorded}, tree at 10");
            assert!(state.redo.is_empty());
        }
    }

    /// A group too big for a record (it would be a sled blob) is committed by a pinned batch, and every
    /// size leaves the same tree and no record.
    #[test]
    fn groups_above_the_record_limit_commit_whole_without_a_record() {
        let dir = tempfile::tempdir().expect("dir");
        let (_db, state) = open(dir.path());
        let big: Vec<Write> = (0..4)
            .map(|i| {
                (
                    format!("big/{i}").into_bytes(),
                    Some(vec![b'x'; REDO_MAX_BYTES / 3]),
                )
            })
            .collect();
        assert!(record_len(&big) > REDO_MAX_BYTES);
        state.write_atomically(big.clone()).expect("commit");
        state.write_atomically(writes("one", 1)).expect("commit");
        assert!(state.redo.is_empty());
        let mut got = contents(&state.tree);
        got.retain(|(k, _)| k.starts_with(b"big/"));
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            big.into_iter().map(|(k, v)| (k, v.expect("set"))).collect();
        assert!(got == want);
        assert_eq!(
            state.tree.get(b"k/0000").expect("read").as_deref(),
            Some(&b"one-0"[..])
        );
    }
}
