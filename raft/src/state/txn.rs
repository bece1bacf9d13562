//! A write set for one log entry: reads see the entry's own earlier writes, and `into_batch` turns the
//! whole set (plus `last_applied`) into one atomic sled `Batch`.
use super::StateResult;
use crate::codec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

pub struct Txn<'a> {
    tree: &'a sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Txn {
            tree,
            writes: BTreeMap::new(),
        }
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
        self.writes.insert(key, Some(codec::encode(value)?));
        Ok(())
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
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

    pub fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}
