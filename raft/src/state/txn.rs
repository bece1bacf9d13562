//! A write set for one or several log entries: reads see the set's own earlier writes, and `into_writes`
//! turns the whole set (plus `last_applied`) into the writes `State::commit` makes atomically. Savepoints
//! nest: one per entry of a group (a refused entry changes nothing), one per command of a `Command::Batch`
//! inside it (a refused command is rolled back without undoing the commands before it).
use super::{keys, StateResult};
use crate::codec;
use crate::console_files::ConsoleFiles;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A key's pending write before a savepoint: `None` when the key had none; and whether it was a console
/// body.
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>, bool);

/// A key and its new value; `None` removes it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

pub struct Txn<'a> {
    tree: &'a sled::Tree,
    /// Where the bodies of `put_console_body` go; without it they stay in the tree.
    console: Option<&'a ConsoleFiles>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys of `writes` whose value goes to the console files, a ref to it to the tree.
    bodies: BTreeSet<Vec<u8>>,
    /// The open savepoints, innermost last: what each write since it replaced, newest last.
    undo: Vec<Vec<Undo>>,
}

impl<'a> Txn<'a> {
    #[cfg(test)]
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self::with_console_files(tree, None)
    }

    pub fn with_console_files(tree: &'a sled::Tree, console: Option<&'a ConsoleFiles>) -> Self {
        Txn {
            tree,
            console,
            writes: BTreeMap::new(),
            bodies: BTreeSet::new(),
            undo: Vec::new(),
        }
    }

    /// Whether `put_console_body` moves bodies out of the tree.
    pub fn has_console_files(&self) -> bool {
        self.console.is_some()
    }

    /// Like `put_raw`, but the value goes to the console files at `into_writes` (a ref to it under
    /// `keys::console_chunk_ref(&key)`), if this write is still pending then.
    pub fn put_console_body(&mut self, key: Vec<u8>, bytes: Vec<u8>) {
        self.write(key.clone(), Some(bytes));
        self.bodies.insert(key);
    }

    /// Runs `change` inside a savepoint: what it wrote stays if it succeeds and is dropped if it is refused
    /// (`Ok(Err(_))`) or fails (`Err(_)`, which fails the whole write set anyway).
    pub fn attempt<T, E>(
        &mut self,
        change: impl FnOnce(&mut Self) -> StateResult<Result<T, E>>,
    ) -> StateResult<Result<T, E>> {
        self.savepoint();
        let outcome = change(self);
        match &outcome {
            Ok(Ok(_)) => self.release(),
            _ => self.rollback(),
        }
        outcome
    }

    /// Opens a savepoint inside those open: `rollback` drops every write made after it, `release` keeps
    /// them (an enclosing savepoint's rollback still drops them).
    pub fn savepoint(&mut self) {
        self.undo.push(Vec::new());
    }

    pub fn release(&mut self) {
        if let Some(inner) = self.undo.pop() {
            if let Some(outer) = self.undo.last_mut() {
                outer.extend(inner);
            }
        }
    }

    pub fn rollback(&mut self) {
        for (key, before, was_body) in self.undo.pop().unwrap_or_default().into_iter().rev() {
            match before {
                Some(pending) => self.writes.insert(key.clone(), pending),
                None => self.writes.remove(&key),
            };
            if was_body {
                self.bodies.insert(key);
            } else {
                self.bodies.remove(&key);
            }
        }
    }

    /// A plain write: the key's value is no longer a console body (until `put_console_body` says so).
    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let was_body = self.bodies.remove(&key);
        if let Some(undo) = self.undo.last_mut() {
            undo.push((key.clone(), self.writes.get(&key).cloned(), was_body));
        }
        self.writes.insert(key, value);
    }

    pub fn get_raw(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        if let Some(pending) = self.writes.get(key) {
            return Ok(pending.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> StateResult<Option<T>> {
        match self.get_raw(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> StateResult<()> {
        self.write(key, Some(codec::encode(value)?));
        Ok(())
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.write(key, None);
    }

    /// Keys and values under `prefix`, this entry's own writes included.
    pub fn scan_prefix(&self, prefix: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, v) = item?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The first entry with a key `>= from` under `prefix`, this entry's own writes included; reads
    /// only as far as it needs (queue heads, not whole queues).
    pub fn first_at_or_after(
        &self,
        from: &[u8],
        prefix: &[u8],
    ) -> StateResult<Option<(Vec<u8>, Vec<u8>)>> {
        let pending = self
            .writes
            .range(from.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        // The tree's first key not removed by this entry.
        let mut stored = None;
        for item in self.tree.range(from.to_vec()..) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if !matches!(self.writes.get(k.as_ref()), Some(None)) {
                stored = Some((k.to_vec(), v.to_vec()));
                break;
            }
        }
        // The first of this entry's own inserts.
        let written = pending
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .next();
        Ok(match (stored, written) {
            (Some(s), Some(w)) => Some(if w.0 <= s.0 { w } else { s }),
            (s, w) => s.or(w),
        })
    }

    /// Removes every key under `prefix`.
    pub fn remove_prefix(&mut self, prefix: &[u8]) -> StateResult<()> {
        for (k, _) in self.scan_prefix(prefix)? {
            self.remove(k);
        }
        Ok(())
    }

    /// The whole write set, in key order. Console bodies are written to the console files first (not
    /// synced): the second value says whether any was, and then the caller must sync them before it
    /// commits the writes.
    pub fn into_writes(self) -> StateResult<(Vec<Write>, bool)> {
        let mut writes = Vec::with_capacity(self.writes.len());
        let mut wrote_bodies = false;
        for (k, v) in self.writes {
            match (v, self.console) {
                (Some(v), Some(files)) if self.bodies.contains(&k) => {
                    let r = files.append(&v)?;
                    writes.push((keys::console_chunk_ref(&k), Some(codec::encode(&r)?)));
                    wrote_bodies = true;
                }
                (v, _) => writes.push((k, v)),
            }
        }
        Ok((writes, wrote_bodies))
    }
}

#[cfg(test)]
mod tests {
    use super::Txn;

    /// A rollback restores each key written since the savepoint to what it was pending before it
    /// (a value, a removal, or nothing), however many times it was written since; a release keeps them.
    #[test]
    fn rollback_restores_what_was_pending_at_the_savepoint() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        tree.insert(b"stored", b"s0".to_vec()).expect("insert");
        let mut txn = Txn::new(&tree);
        txn.put_raw(b"a".to_vec(), b"a1".to_vec());
        txn.remove(b"stored".to_vec());
        txn.savepoint();
        txn.put_raw(b"a".to_vec(), b"a2".to_vec());
        txn.put_raw(b"a".to_vec(), b"a3".to_vec());
        txn.put_raw(b"stored".to_vec(), b"s1".to_vec());
        txn.put_raw(b"new".to_vec(), b"n".to_vec());
        txn.remove(b"new".to_vec());
        txn.rollback();
        assert_eq!(txn.get_raw(b"a").expect("get"), Some(b"a1".to_vec()));
        assert_eq!(txn.get_raw(b"stored").expect("get"), None);
        assert_eq!(txn.get_raw(b"new").expect("get"), None);
        txn.savepoint();
        txn.put_raw(b"new".to_vec(), b"kept".to_vec());
        txn.release();
        txn.rollback(); // no savepoint open: nothing to undo
        assert_eq!(txn.get_raw(b"new").expect("get"), Some(b"kept".to_vec()));
        tree.apply_batch(super::super::redo::to_batch(
            txn.into_writes().expect("writes").0,
        ))
        .expect("apply");
        assert_eq!(tree.get(b"stored").expect("get"), None);
        assert_eq!(
            tree.get(b"new").expect("get").as_deref(),
            Some(&b"kept"[..])
        );
    }

    /// Savepoints nest (a group's entry around a batch's command): releasing the inner one hands its writes
    /// to the outer one, whose rollback then drops them too; a rollback also restores whether a key's
    /// pending value is a console body.
    #[test]
    fn an_outer_rollback_drops_what_inner_savepoints_released() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        let mut txn = Txn::new(&tree);
        txn.put_console_body(b"body".to_vec(), b"b0".to_vec());
        txn.savepoint(); // the entry
        txn.put_raw(b"a".to_vec(), b"a1".to_vec());
        txn.savepoint(); // a command inside it
        txn.put_raw(b"body".to_vec(), b"plain".to_vec());
        txn.put_console_body(b"c".to_vec(), b"c1".to_vec());
        assert!(!txn.bodies.contains(&b"body"[..]));
        txn.release();
        txn.savepoint(); // a refused command
        txn.put_raw(b"a".to_vec(), b"a2".to_vec());
        txn.rollback();
        assert_eq!(txn.get_raw(b"a").expect("get"), Some(b"a1".to_vec()));
        assert_eq!(txn.get_raw(b"c").expect("get"), Some(b"c1".to_vec()));
        txn.rollback(); // the entry is refused
        assert_eq!(txn.get_raw(b"a").expect("get"), None);
        assert_eq!(txn.get_raw(b"c").expect("get"), None);
        assert_eq!(txn.get_raw(b"body").expect("get"), Some(b"b0".to_vec()));
        assert!(txn.bodies.contains(&b"body"[..]));
        assert!(!txn.bodies.contains(&b"c"[..]));
    }
}
