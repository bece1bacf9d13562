//! Console chunks as the state tree stores them: raw bytes under the chunk's key, or a `ConsoleRef` to
//! this node's console files under the key with `r` appended (`console_files.rs`). Readers, snapshots and
//! backups see only offsets and bytes.
use super::{keys, State, StateResult};
use crate::codec;
use crate::console_files::ConsoleRef;
use std::collections::BTreeSet;

/// Console bytes that stay in the tree (below `console_files::MIN_BYTES`, or on a state without console
/// files) are stored in pieces of at most this size, each under its own offset. sled 0.34 keeps
/// values inline in its leaves and splits a leaf only above 16 items: whole 64 KiB chunks made ~1 MiB
/// leaves, which sled wrote as blob files (one created, written and deleted per rewrite of the leaf) over
/// and over during a log flood. 17 pieces of 6 KiB stay under its blob threshold (a quarter of a 512 KiB
/// segment). Readers take chunks of any size (stores written before keep theirs).
pub(crate) const CONSOLE_PIECE: usize = 6 << 10;

/// One stored chunk of a run's console.
pub(crate) enum Chunk {
    Inline(sled::IVec),
    Stored(ConsoleRef),
}

impl Chunk {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Chunk::Inline(bytes) => bytes.len() as u64,
            Chunk::Stored(r) => u64::from(r.len),
        }
    }
}

impl State {
    /// The offset and chunk of a pair under `prefix` (a run's `keys::console_of`).
    pub(crate) fn console_chunk(
        &self,
        prefix: &[u8],
        key: &[u8],
        value: sled::IVec,
    ) -> StateResult<(u64, Chunk)> {
        let (tail, chunk) = match keys::console_ref_chunk(key) {
            Some(chunk_key) => (
                &chunk_key[prefix.len().min(chunk_key.len())..],
                Chunk::Stored(codec::decode(&value)?),
            ),
            None => (&key[prefix.len().min(key.len())..], Chunk::Inline(value)),
        };
        let offset = std::str::from_utf8(tail)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((offset, chunk))
    }

    /// The bytes of `chunk`.
    pub(crate) fn chunk_bytes(&self, chunk: Chunk) -> StateResult<Vec<u8>> {
        match chunk {
            Chunk::Inline(bytes) => Ok(bytes.to_vec()),
            Chunk::Stored(r) => self.read_console_ref(&r),
        }
    }

    fn read_console_ref(&self, r: &ConsoleRef) -> StateResult<Vec<u8>> {
        let files = self.console.as_ref().ok_or_else(|| {
            std::io::Error::other("a console ref in a state opened without its console files")
        })?;
        Ok(files.read(r)?)
    }

    /// The whole tree as it leaves this node (snapshots, backups): a console ref becomes the pieces a
    /// node without console files stores for the same append (same keys, same bytes), so what leaves a
    /// node does not depend on where it kept the bytes. Also the console segments the refs point into,
    /// found on the way (`delete_console_files_unused_by`).
    pub fn export(&self) -> StateResult<(codec::Pairs, ConsoleFilesInUse)> {
        let mut in_use = self.console_files_in_use_from();
        let mut pairs = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let Some(chunk_key) = keys::console_ref_chunk(&key) else {
                pairs.push((key.to_vec(), value.to_vec()));
                continue;
            };
            let r: ConsoleRef = codec::decode(&value)?;
            in_use.referenced.insert(r.segment);
            let bytes = self.read_console_ref(&r)?;
            let (run_prefix, mut at) = console_piece_of(chunk_key).ok_or_else(|| {
                std::io::Error::other(format!(
                    "console ref key {:?} has no offset",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            for piece in bytes.chunks(CONSOLE_PIECE) {
                let mut piece_key = run_prefix.to_vec();
                piece_key.extend_from_slice(format!("{at:020}").as_bytes());
                pairs.push((piece_key, piece.to_vec()));
                at += piece.len() as u64;
            }
        }
        Ok((pairs, in_use))
    }

    /// The inverse of [`State::export`] for a node with console files (installing a snapshot): the console
    /// pieces of `pairs` that [`State::export`] would have made from one ref are written to the console
    /// files and replaced by that ref, so a wiped node does not write a log flood's console into sled (about
    /// five times over, `console_files.rs`) while it catches up. Everything else passes through.
    ///
    /// A ref is made only where exporting it gives back exactly the pieces it replaces — a contiguous run of
    /// one run's pieces, every one but the last `CONSOLE_PIECE` long, `MIN_BYTES` or more in all — so what
    /// leaves this node later is the same pairs whichever node it came from. The bodies are synced before
    /// this returns: the caller's batch may then hold their refs (`console_files.rs`, durability).
    pub(crate) fn import(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> StateResult<codec::Pairs> {
        let Some(files) = &self.console else {
            return Ok(pairs);
        };
        let mut out = Vec::with_capacity(pairs.len());
        let mut group = PieceGroup::default();
        for (key, value) in pairs {
            match console_piece_of(&key) {
                Some((run_prefix, offset)) => {
                    let prefix_len = run_prefix.len();
                    if !group.takes(run_prefix, offset, value.len()) {
                        group.flush_into(files, &mut out)?;
                    }
                    group.push(prefix_len, offset, key, value);
                }
                None => {
                    group.flush_into(files, &mut out)?;
                    out.push((key, value));
                }
            }
        }
        group.flush_into(files, &mut out)?;
        files.sync()?;
        Ok(out)
    }

    /// An empty set of segments in use, starting now: refs are only ever created in the segment being
    /// written (or newer ones), so below it the set a scan finds can only shrink.
    fn console_files_in_use_from(&self) -> ConsoleFilesInUse {
        ConsoleFilesInUse {
            below: self.console.as_ref().map_or(0, |files| files.current()),
            referenced: BTreeSet::new(),
        }
    }

    /// Deletes the console segment files no ref points into any more (a scan of the console keys, then a
    /// flush); how many went.
    pub fn sweep_console_files(&self) -> StateResult<usize> {
        let mut in_use = self.console_files_in_use_from();
        for item in self.tree.scan_prefix(keys::CONSOLES) {
            let (k, v) = item?;
            if keys::console_ref_chunk(&k).is_some() {
                in_use
                    .referenced
                    .insert(codec::decode::<ConsoleRef>(&v)?.segment);
            }
        }
        self.tree.flush()?;
        self.delete_console_files_unused_by(&in_use)
    }

    /// Deletes the console segments below `in_use.below` that it does not name. The caller makes sure a
    /// state that refers to none of them is durable first (a flush after the scan, or a scan of a state
    /// flushed before and not changed since), so a crash never brings back a ref to a deleted file.
    pub fn delete_console_files_unused_by(&self, in_use: &ConsoleFilesInUse) -> StateResult<usize> {
        match &self.console {
            Some(files) => Ok(files.delete_unreferenced(&in_use.referenced, in_use.below)?),
            None => Ok(0),
        }
    }
}

/// The console segments a scan of the tree found referenced, and the segment being written when the scan
/// began.
pub struct ConsoleFilesInUse {
    below: u64,
    referenced: BTreeSet<u64>,
}

/// At most this many pieces become one ref on import (1.5 MiB): a reader of a few bytes reads a whole ref.
const MAX_PIECES_PER_REF: usize = 256;

/// The run prefix (`keys::console_of`, up to the last `/`) and offset of a raw console piece's key; `None`
/// for any other key, a ref's included.
fn console_piece_of(key: &[u8]) -> Option<(&[u8], u64)> {
    if !key.starts_with(keys::CONSOLES) || keys::console_ref_chunk(key).is_some() {
        return None;
    }
    let slash = key.iter().rposition(|&b| b == b'/')?;
    let offset = std::str::from_utf8(&key[slash + 1..]).ok()?.parse().ok()?;
    Some((&key[..=slash], offset))
}

/// Consecutive pieces of one run that one ref can stand for (`State::import`).
#[derive(Default)]
struct PieceGroup {
    run_prefix: Vec<u8>,
    next_offset: u64,
    /// Whether the last piece was shorter than `CONSOLE_PIECE` (an exported ref's last piece).
    closed: bool,
    pieces: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PieceGroup {
    fn takes(&self, run_prefix: &[u8], offset: u64, len: usize) -> bool {
        !self.pieces.is_empty()
            && !self.closed
            && self.pieces.len() < MAX_PIECES_PER_REF
            && run_prefix == self.run_prefix.as_slice()
            && offset == self.next_offset
            && len <= CONSOLE_PIECE
    }

    /// Adds the piece at `key` (its run prefix is the first `prefix_len` bytes, `console_piece_of`).
    fn push(&mut self, prefix_len: usize, offset: u64, key: Vec<u8>, value: Vec<u8>) {
        if self.pieces.is_empty() {
            self.run_prefix = key[..prefix_len].to_vec();
            self.next_offset = offset;
        }
        self.next_offset += value.len() as u64;
        self.closed = value.len() != CONSOLE_PIECE;
        self.pieces.push((key, value));
    }

    /// Moves the group to `out`: as one ref to its bytes in `files` if it is big enough, else as it was.
    fn flush_into(
        &mut self,
        files: &crate::console_files::ConsoleFiles,
        out: &mut codec::Pairs,
    ) -> StateResult<()> {
        let pieces = std::mem::take(&mut self.pieces);
        let len: usize = pieces.iter().map(|(_, v)| v.len()).sum();
        // A lone piece, or a first piece longer than an export makes, stays as it is.
        if len < crate::console_files::MIN_BYTES || pieces[0].1.len() > CONSOLE_PIECE {
            out.extend(pieces);
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(len);
        for (_, v) in &pieces {
            bytes.extend_from_slice(v);
        }
        let r = files.append(&bytes)?;
        out.push((keys::console_chunk_ref(&pieces[0].0), codec::encode(&r)?));
        Ok(())
    }
}
