//! A history checker for the chaos suite, sized to the objects JobServ exposes (Knossos and Porcupine are
//! the anchors; we do not need their general search because every object we watch is *monotone*).
//!
//! Every client operation is recorded as an [`Op`]: a key, write or read, the instants it was invoked and
//! completed (as the client saw them), the node it went to, and its [`Outcome`]. Values are totally
//! ordered numbers:
//!
//! - `builds/<project>`: the highest build number ([`Model::Counter`]): a create that answers N is a write of
//!   N; a list that sees N as its newest build reads N (a project the node does not know reads 0);
//! - `run/<project>/<build>/<run>`: the run status rank ([`status_rank`]): absent < QUEUED < RUNNING <
//!   terminal;
//! - `console/<project>/<build>/<run>`: the console length, an append-only log ([`History::read_log`] also
//!   checks that every read's bytes are a prefix of the longest read's).
//!
//! [`History::check`] verifies, per key, in O(n log n):
//!
//! - (a) a read never returns less than a write that completed before the read was invoked;
//! - (b) a read never returns less than a read that completed before it was invoked (no going back);
//! - (c) for counters, whose every write is recorded, a read never returns more than the writes invoked
//!   before it completed can explain (a phantom): `max(initial, highest number returned by such a write) +
//!   number of such writes with an unknown outcome`;
//! - for counters, a create never returns a number already observed before it was invoked, and no two
//!   creates return the same number;
//! - for logs, every read is a prefix of every longer read.
//!
//! "Before" is strict real-time precedence (`a.complete < b.invoke`); overlapping operations impose nothing.
//! Failed operations impose nothing; an indeterminate write ([`Outcome::Unknown`]: 503, timeout, lost
//! connection) may or may not have taken effect, at any time after it was invoked.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Run status ranks (a run's status only moves up this order in the chaos suite, which never reruns or
/// requeues). `ABSENT` is a run the node does not know yet (404).
pub mod rank {
    pub const ABSENT: u64 = 0;
    pub const QUEUED: u64 = 1;
    /// RUNNING, UPLOADING, CANCELLING.
    pub const RUNNING: u64 = 2;
    /// PASSED, FAILED, PROMOTED.
    pub const DONE: u64 = 3;
}

/// The rank of a run status as the API spells it.
pub fn status_rank(status: &str) -> Option<u64> {
    match status {
        "QUEUED" => Some(rank::QUEUED),
        "RUNNING" | "UPLOADING" | "CANCELLING" => Some(rank::RUNNING),
        "PASSED" | "FAILED" | "PROMOTED" => Some(rank::DONE),
        _ => None,
    }
}

/// A value as a person reads it: run statuses by name, console lengths in bytes.
pub fn show(key: &str, value: u64) -> String {
    if key.starts_with("run/") {
        match value {
            rank::ABSENT => "absent (404)".into(),
            rank::QUEUED => "QUEUED".into(),
            rank::RUNNING => "RUNNING".into(),
            rank::DONE => "terminal".into(),
            v => v.to_string(),
        }
    } else if key.starts_with("console/") {
        format!("{value} bytes")
    } else {
        value.to_string()
    }
}

pub fn builds_key(project: &str) -> String {
    format!("builds/{project}")
}

pub fn run_key(project: &str, build: u64, run: &str) -> String {
    format!("run/{project}/{build}/{run}")
}

pub fn console_key(project: &str, build: u64, run: &str) -> String {
    format!("console/{project}/{build}/{run}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Write,
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect (a write) or returned (a read) this value.
    Ok(u64),
    /// Definitely had no effect (a refusal, a request that never reached a node) or returned nothing (a
    /// read that failed, 503 included). Imposes nothing.
    Failed(String),
    /// A write that may or may not have taken effect (503, timeout, connection lost after sending); its
    /// value if known. A read recorded as unknown is treated as failed.
    Unknown(Option<u64>, String),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub kind: Kind,
    pub node: String,
    pub invoke: Instant,
    pub complete: Instant,
    pub outcome: Outcome,
}

impl Op {
    fn ok(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }

    /// One line: kind, key, node, times relative to `start`, outcome.
    pub fn render(&self, start: Instant) -> String {
        let at = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        let kind = match self.kind {
            Kind::Write => "write",
            Kind::Read => "read",
        };
        let outcome = match &self.outcome {
            Outcome::Ok(v) => format!("-> {}", show(&self.key, *v)),
            Outcome::Failed(why) => format!("failed ({why})"),
            Outcome::Unknown(Some(v), why) => {
                format!("indeterminate, value {} ({why})", show(&self.key, *v))
            }
            Outcome::Unknown(None, why) => format!("indeterminate ({why})"),
        };
        format!(
            "{kind} {} via {} [+{:.3} s .. +{:.3} s] {outcome}",
            self.key,
            self.node,
            at(self.invoke),
            at(self.complete)
        )
    }
}

/// How a key's values may evolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// A register whose value only grows (run status rank, console length). Recorded writes say "at least
    /// this from completion on"; other writers (workers) are not recorded, so nothing bounds it from above.
    Monotone,
    /// A gapless counter (build numbers) written *only* by recorded operations: each create that takes
    /// effect returns the next number. `initial` is its value when recording began.
    Counter { initial: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A read returned less than a write that completed before the read was invoked.
    StaleRead,
    /// A read returned less than a read that completed before it was invoked.
    ReadWentBack,
    /// A read returned a value no write invoked before it completed can explain.
    Phantom,
    /// A create returned a number already observed before it was invoked.
    StaleWrite,
    /// Two creates returned the same number.
    DuplicateWrite,
    /// Two reads of an append-only log are not prefixes of one another.
    LogDiverged,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub kind: ViolationKind,
    pub key: String,
    pub detail: String,
    /// The offending operations, the violating one first.
    pub ops: Vec<Op>,
}

impl Violation {
    pub fn render(&self, start: Instant) -> String {
        let mut s = format!("{:?} on {}: {}", self.kind, self.key, self.detail);
        for op in &self.ops {
            s.push_str("\n    ");
            s.push_str(&op.render(start));
        }
        s
    }
}

/// What a linearizable history held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub ops: usize,
    pub keys: usize,
    pub writes: usize,
    pub reads: usize,
    /// Failed or indeterminate operations (no constraint, or a weaker one).
    pub failed: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history linearizable ({} ops: {} writes, {} reads on {} keys, {} failed or indeterminate)",
            self.ops, self.writes, self.reads, self.keys, self.failed
        )
    }
}

/// The checker's refusal: every violation found (the first [`Violations::SHOWN`] printed).
#[derive(Clone, Debug)]
pub struct Violations {
    pub start: Instant,
    pub ops: usize,
    /// How many violations were found (`violations` keeps at most [`Violations::KEPT`]).
    pub total: usize,
    pub violations: Vec<Violation>,
}

impl Violations {
    pub const KEPT: usize = 200;
    pub const SHOWN: usize = 10;

    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history not linearizable: {} violation(s) in {} ops (times from the start of the history)",
            self.total, self.ops
        )?;
        for v in self.violations.iter().take(Self::SHOWN) {
            write!(f, "\n  {}", v.render(self.start))?;
        }
        if self.total > Self::SHOWN {
            write!(f, "\n  ... and {} more", self.total - Self::SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

struct LogState {
    longest: Vec<u8>,
    holder: usize,
}

#[derive(Default)]
struct Inner {
    ops: Vec<Op>,
    models: HashMap<String, Model>,
    logs: HashMap<String, LogState>,
    /// Found while recording (log prefixes): ops by index.
    divergences: Vec<(String, String, usize, usize)>,
}

/// The recorder: cheap to clone, shared by every task of a scenario.
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            inner: Arc::default(),
            start: Instant::now(),
        }
    }

    /// The instant times are printed relative to.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares how `key` evolves (keys default to [`Model::Monotone`]).
    pub fn declare(&self, key: &str, model: Model) {
        self.lock().models.insert(key.to_string(), model);
    }

    /// Records an operation; returns its index.
    pub fn record(&self, op: Op) -> usize {
        let mut inner = self.lock();
        inner.ops.push(op);
        inner.ops.len() - 1
    }

    pub fn write(
        &self,
        key: &str,
        node: &str,
        invoke: Instant,
        complete: Instant,
        outcome: Outcome,
    ) -> usize {
        self.record(Op {
            key: key.to_string(),
            kind: Kind::Write,
            node: node.to_string(),
            invoke,
            complete,
            outcome,
        })
    }

    /// A read: `Ok(value)`, or `Err(why)` when it returned nothing usable.
    pub fn read(
        &self,
        key: &str,
        node: &str,
        invoke: Instant,
        complete: Instant,
        value: Result<u64, String>,
    ) -> usize {
        self.record(Op {
            key: key.to_string(),
            kind: Kind::Read,
            node: node.to_string(),
            invoke,
            complete,
            outcome: match value {
                Ok(v) => Outcome::Ok(v),
                Err(why) => Outcome::Failed(why),
            },
        })
    }

    /// A read of an append-only log: recorded as a read of its length, and its bytes are checked against
    /// the longest read of the same key so far (one must be a prefix of the other).
    pub fn read_log(
        &self,
        key: &str,
        node: &str,
        invoke: Instant,
        complete: Instant,
        bytes: Result<&[u8], String>,
    ) -> usize {
        let mut inner = self.lock();
        let outcome = match &bytes {
            Ok(b) => Outcome::Ok(b.len() as u64),
            Err(why) => Outcome::Failed(why.clone()),
        };
        inner.ops.push(Op {
            key: key.to_string(),
            kind: Kind::Read,
            node: node.to_string(),
            invoke,
            complete,
            outcome,
        });
        let idx = inner.ops.len() - 1;
        let Ok(bytes) = bytes else {
            return idx;
        };
        let mut diverged = None;
        match inner.logs.get_mut(key) {
            None => {
                inner.logs.insert(
                    key.to_string(),
                    LogState {
                        longest: bytes.to_vec(),
                        holder: idx,
                    },
                );
            }
            Some(log) => {
                let common = log.longest.len().min(bytes.len());
                if let Some(at) = (0..common).find(|&i| log.longest[i] != bytes[i]) {
                    let detail = format!(
                        "the two reads differ at byte {at}: {:?} vs {:?}",
                        snippet(bytes, at),
                        snippet(&log.longest, at)
                    );
                    diverged = Some((detail, log.holder));
                } else if bytes.len() > log.longest.len() {
                    log.longest = bytes.to_vec();
                    log.holder = idx;
                }
            }
        }
        if let Some((detail, holder)) = diverged {
            inner
                .divergences
                .push((key.to_string(), detail, idx, holder));
        }
        idx
    }

    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every operation recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// Checks the history recorded so far.
    pub fn check(&self) -> Result<Summary, Violations> {
        let inner = self.lock();
        let mut found = Found::default();
        for (key, detail, a, b) in &inner.divergences {
            found.push(Violation {
                kind: ViolationKind::LogDiverged,
                key: key.clone(),
                detail: detail.clone(),
                ops: vec![inner.ops[*a].clone(), inner.ops[*b].clone()],
            });
        }
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, op) in inner.ops.iter().enumerate() {
            by_key.entry(op.key.as_str()).or_default().push(i);
        }
        // Deterministic order of reports.
        let mut keys: Vec<&str> = by_key.keys().copied().collect();
        keys.sort_unstable();
        for key in &keys {
            let model = inner.models.get(*key).copied().unwrap_or(Model::Monotone);
            check_key(&inner.ops, key, &by_key[key], model, &mut found);
        }
        let mut summary = Summary {
            ops: inner.ops.len(),
            keys: keys.len(),
            ..Summary::default()
        };
        for op in &inner.ops {
            match op.kind {
                Kind::Write => summary.writes += 1,
                Kind::Read => summary.reads += 1,
            }
            if op.ok().is_none() {
                summary.failed += 1;
            }
        }
        if found.total == 0 {
            Ok(summary)
        } else {
            Err(Violations {
                start: self.start,
                ops: inner.ops.len(),
                total: found.total,
                violations: found.kept,
            })
        }
    }
}

fn snippet(bytes: &[u8], at: usize) -> String {
    let from = at.saturating_sub(16);
    let to = (at + 24).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..to]).into_owned()
}

#[derive(Default)]
struct Found {
    total: usize,
    kept: Vec<Violation>,
}

impl Found {
    fn push(&mut self, v: Violation) {
        self.total += 1;
        if self.kept.len() < Violations::KEPT {
            self.kept.push(v);
        }
    }
}

fn check_key(ops: &[Op], key: &str, idxs: &[usize], model: Model, found: &mut Found) {
    let counter = match model {
        Model::Counter { initial } => Some(initial),
        Model::Monotone => None,
    };
    let violation = |kind, detail: String, culprits: &[usize]| Violation {
        kind,
        key: key.to_string(),
        detail,
        ops: culprits.iter().map(|&i| ops[i].clone()).collect(),
    };
    // (a), (b) and fresh creates: sweep the probes by invocation over the observations by completion,
    // keeping the highest value observed so far.
    let mut observed: Vec<usize> = idxs
        .iter()
        .copied()
        .filter(|&i| ops[i].ok().is_some())
        .collect();
    observed.sort_by_key(|&i| ops[i].complete);
    let mut probes: Vec<usize> = observed
        .iter()
        .copied()
        .filter(|&i| ops[i].kind == Kind::Read || counter.is_some())
        .collect();
    probes.sort_by_key(|&i| ops[i].invoke);
    let mut next = 0;
    let mut best: Option<usize> = None;
    for &p in &probes {
        while next < observed.len() && ops[observed[next]].complete < ops[p].invoke {
            let o = observed[next];
            if best.map_or(true, |b| ops[o].ok() > ops[b].ok()) {
                best = Some(o);
            }
            next += 1;
        }
        let value = ops[p].ok().unwrap_or(0);
        match ops[p].kind {
            Kind::Read => {
                if let Some(b) = best {
                    let seen = ops[b].ok().unwrap_or(0);
                    if value < seen {
                        let (kind, what) = match ops[b].kind {
                            Kind::Write => (ViolationKind::StaleRead, "a write"),
                            Kind::Read => (ViolationKind::ReadWentBack, "a read"),
                        };
                        found.push(violation(
                            kind,
                            format!(
                                "read {} after {what} of {} had completed",
                                show(key, value),
                                show(key, seen)
                            ),
                            &[p, b],
                        ));
                        continue;
                    }
                }
                if let Some(initial) = counter {
                    if value < initial {
                        found.push(violation(
                            ViolationKind::StaleRead,
                            format!("read {value}, below {initial} known when recording began"),
                            &[p],
                        ));
                    }
                }
            }
            Kind::Write => {
                // Counters only: a create returns a number greater than anything observed before it.
                let floor = best.and_then(|b| ops[b].ok()).unwrap_or(0);
                let floor = floor.max(counter.unwrap_or(0));
                if value <= floor {
                    let mut culprits = vec![p];
                    culprits.extend(best);
                    found.push(violation(
                        ViolationKind::StaleWrite,
                        format!("a create returned {value}, but {floor} was already known before it was invoked"),
                        &culprits,
                    ));
                }
            }
        }
    }
    let Some(initial) = counter else {
        return;
    };
    // Unique numbers.
    let mut by_value: HashMap<u64, usize> = HashMap::new();
    let mut writes: Vec<usize> = idxs
        .iter()
        .copied()
        .filter(|&i| ops[i].kind == Kind::Write)
        .collect();
    writes.sort_by_key(|&i| ops[i].invoke);
    for &w in &writes {
        if let Some(v) = ops[w].ok() {
            if let Some(&other) = by_value.get(&v) {
                found.push(violation(
                    ViolationKind::DuplicateWrite,
                    format!("two creates returned {v}"),
                    &[w, other],
                ));
            } else {
                by_value.insert(v, w);
            }
        }
    }
    // (c) phantoms: sweep the reads by completion over the writes by invocation.
    let mut reads: Vec<usize> = observed
        .iter()
        .copied()
        .filter(|&i| ops[i].kind == Kind::Read)
        .collect();
    reads.sort_by_key(|&i| ops[i].complete);
    let (mut next, mut known, mut unknown, mut last) = (0, initial, 0u64, None);
    for &r in &reads {
        while next < writes.len() && ops[writes[next]].invoke < ops[r].complete {
            let w = writes[next];
            match ops[w].outcome {
                Outcome::Ok(v) | Outcome::Unknown(Some(v), _) => known = known.max(v),
                Outcome::Unknown(None, _) => unknown += 1,
                Outcome::Failed(_) => {}
            }
            if !matches!(ops[w].outcome, Outcome::Failed(_)) {
                last = Some(w);
            }
            next += 1;
        }
        let value = ops[r].ok().unwrap_or(0);
        if value > known + unknown {
            let mut culprits = vec![r];
            culprits.extend(last);
            found.push(violation(
                ViolationKind::Phantom,
                format!(
                    "read {value}, but the writes invoked before it completed explain at most {} \
                     (highest known {known}, plus {unknown} of unknown outcome; or a create took effect twice){}",
                    known + unknown,
                    if last.is_some() {
                        "; the last of them"
                    } else {
                        "; no write was invoked before it"
                    }
                ),
                &culprits,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct T {
        h: History,
        base: Instant,
    }

    impl T {
        fn new() -> T {
            let h = History::new();
            T { base: h.start(), h }
        }
        fn at(&self, ms: u64) -> Instant {
            self.base + Duration::from_millis(ms)
        }
        fn w(&self, key: &str, node: &str, from: u64, to: u64, outcome: Outcome) {
            self.h.write(key, node, self.at(from), self.at(to), outcome);
        }
        fn r(&self, key: &str, node: &str, from: u64, to: u64, v: u64) {
            self.h.read(key, node, self.at(from), self.at(to), Ok(v));
        }
        fn log(&self, key: &str, from: u64, to: u64, bytes: &str) {
            self.h
                .read_log(key, "n2", self.at(from), self.at(to), Ok(bytes.as_bytes()));
        }
        fn counter(&self, key: &str) {
            self.h.declare(key, Model::Counter { initial: 0 });
        }
        fn failure(&self) -> Violations {
            self.h.check().expect_err("the checker must refuse")
        }
    }

    const B: &str = "builds/p";

    #[test]
    fn sequential_history_passes() {
        let t = T::new();
        t.counter(B);
        t.r(B, "n2", 0, 5, 0);
        t.w(B, "n1", 10, 20, Outcome::Ok(1));
        t.r(B, "n2", 21, 30, 1);
        t.w(B, "n3", 31, 40, Outcome::Ok(2));
        t.r(B, "n1", 41, 50, 2);
        t.r(B, "n2", 51, 60, 2);
        let s = t.h.check().expect("linearizable");
        assert_eq!(
            (s.ops, s.writes, s.reads, s.keys, s.failed),
            (6, 2, 4, 1, 0)
        );
        assert!(s.to_string().contains("history linearizable (6 ops"));
    }

    #[test]
    fn concurrent_overlapping_ops_pass() {
        let t = T::new();
        t.counter(B);
        // A slow create: reads during it may see it or not, in either order *as long as they overlap*.
        t.w(B, "n1", 0, 100, Outcome::Ok(1));
        t.r(B, "n2", 10, 50, 1);
        t.r(B, "n3", 20, 60, 0); // overlaps the read that saw 1: may be linearized before it
        t.r(B, "n2", 55, 70, 1); // after the read of 0 completed: 1 >= 0
        t.w(B, "n2", 90, 150, Outcome::Ok(2)); // concurrent creates: numbers in any order
        t.w(B, "n3", 95, 140, Outcome::Ok(3));
        t.r(B, "n1", 96, 160, 3); // the create returning 3 was invoked before this read completed
        t.r(B, "n1", 161, 170, 3);
        // Run status: a read of RUNNING overlapping a read of QUEUED is fine.
        let run = "run/p/1/a";
        t.r(run, "n1", 0, 30, rank::RUNNING);
        t.r(run, "n2", 10, 40, rank::QUEUED);
        t.r(run, "n3", 41, 50, rank::RUNNING);
        t.h.check().expect("linearizable");
    }

    #[test]
    fn stale_read_after_a_completed_write_fails() {
        let t = T::new();
        t.counter(B);
        t.w(B, "node 1", 0, 10, Outcome::Ok(1));
        t.w(B, "node 1", 11, 20, Outcome::Ok(2));
        t.r(B, "node 2", 25, 30, 1);
        let v = t.failure();
        assert_eq!(v.total, 1);
        assert_eq!(v.violations[0].kind, ViolationKind::StaleRead);
        let text = v.to_string();
        assert!(
            text.contains("read builds/p via node 2 [+0.025 s .. +0.030 s] -> 1"),
            "{text}"
        );
        assert!(
            text.contains("write builds/p via node 1 [+0.011 s .. +0.020 s] -> 2"),
            "{text}"
        );
        // Same for a run status after a completed cancel.
        let t = T::new();
        t.w("run/p/1/a", "n1", 0, 10, Outcome::Ok(rank::DONE));
        t.r("run/p/1/a", "n2", 11, 12, rank::QUEUED);
        let v = t.failure();
        assert_eq!(v.violations[0].kind, ViolationKind::StaleRead);
        assert!(
            v.to_string()
                .contains("read QUEUED after a write of terminal had completed"),
            "{v}"
        );
    }

    #[test]
    fn reads_going_back_fail() {
        let t = T::new();
        t.r("run/p/1/a", "n1", 0, 10, rank::DONE);
        t.r("run/p/1/a", "n2", 11, 20, rank::RUNNING);
        let v = t.failure();
        assert_eq!(v.violations[0].kind, ViolationKind::ReadWentBack);
        assert_eq!(v.violations[0].ops[0].node, "n2");
        assert_eq!(v.violations[0].ops[1].node, "n1");
        // A console length going back.
        let t = T::new();
        t.log("console/p/1/a", 0, 10, "line 1\nline 2\n");
        t.log("console/p/1/a", 20, 30, "line 1\n");
        assert_eq!(t.failure().violations[0].kind, ViolationKind::ReadWentBack);
    }

    #[test]
    fn phantom_values_fail() {
        let t = T::new();
        t.counter(B);
        t.w(B, "n1", 0, 10, Outcome::Ok(1));
        t.r(B, "n2", 5, 15, 2); // nothing can have made 2
        let v = t.failure();
        assert_eq!(v.violations[0].kind, ViolationKind::Phantom);
        assert!(v.to_string().contains("explain at most 1"), "{v}");
        // A read that sees a create still in flight is fine; one completed before the create was invoked
        // is not.
        let t = T::new();
        t.counter(B);
        t.r(B, "n2", 0, 5, 1);
        t.w(B, "n1", 10, 20, Outcome::Ok(1));
        let v = t.failure();
        assert!(v
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::Phantom));
        // The create then returned a number already observed.
        assert!(v
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::StaleWrite));
    }

    #[test]
    fn indeterminate_and_failed_writes() {
        let t = T::new();
        t.counter(B);
        t.w(B, "n1", 0, 10, Outcome::Unknown(None, "503".into()));
        t.r(B, "n2", 20, 30, 0); // not applied (yet)
        t.r(B, "n3", 40, 50, 1); // applied late: fine
        t.w(B, "n1", 60, 70, Outcome::Ok(2));
        t.r(B, "n2", 71, 80, 2);
        t.h.check()
            .expect("an indeterminate write may take effect late");
        // But one indeterminate write explains one build, not two.
        t.r(B, "n3", 81, 90, 4);
        let v = t.failure();
        assert_eq!(v.violations[0].kind, ViolationKind::Phantom);
        // A failed write explains nothing; an indeterminate one constrains no read.
        let t = T::new();
        t.counter(B);
        t.w(B, "n1", 0, 10, Outcome::Failed("400".into()));
        t.w(B, "n1", 11, 12, Outcome::Unknown(None, "timeout".into()));
        t.r(B, "n2", 20, 30, 0);
        t.h.check().expect("nothing to see yet");
        t.r(B, "n2", 31, 40, 2);
        assert_eq!(t.failure().violations[0].kind, ViolationKind::Phantom);
        // Failed reads impose nothing.
        let t = T::new();
        t.counter(B);
        t.w(B, "n1", 0, 10, Outcome::Ok(1));
        t.h.read(B, "n2", t.at(11), t.at(20), Err("503".into()));
        t.h.check().expect("a failed read says nothing");
    }

    #[test]
    fn duplicate_creates_fail() {
        let t = T::new();
        t.counter(B);
        t.w(B, "n1", 0, 10, Outcome::Ok(1));
        t.w(B, "n2", 5, 12, Outcome::Ok(1));
        assert!(t
            .failure()
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::DuplicateWrite));
    }

    #[test]
    fn counter_initial_value() {
        let t = T::new();
        t.h.declare(B, Model::Counter { initial: 5 });
        t.r(B, "n1", 0, 10, 5);
        t.w(B, "n1", 11, 20, Outcome::Ok(6));
        t.r(B, "n2", 21, 30, 6);
        t.h.check().expect("linearizable");
        t.r(B, "n3", 31, 40, 3);
        assert_eq!(t.failure().violations[0].kind, ViolationKind::StaleRead);
    }

    #[test]
    fn logs_must_be_prefixes() {
        let t = T::new();
        let k = "console/p/1/a";
        t.log(k, 0, 10, "");
        t.log(k, 5, 15, "line 1\n");
        t.log(k, 20, 30, "line 1\nline 2\n");
        t.log(k, 25, 28, "line 1\nli"); // concurrent, shorter: a prefix, fine
        t.h.read(k, "n1", t.at(31), t.at(32), Ok(14)); // a length-only read (log_bytes)
        t.h.check().expect("prefixes");
        t.log(k, 40, 50, "line 1\nline X\nline 3\n");
        let v = t.failure();
        assert_eq!(v.violations[0].kind, ViolationKind::LogDiverged);
        assert!(v.to_string().contains("differ at byte 12"), "{v}");
    }

    #[test]
    fn keys_are_independent() {
        let t = T::new();
        t.r("run/p/1/a", "n1", 0, 10, rank::DONE);
        t.r("run/p/1/b", "n1", 11, 20, rank::QUEUED);
        t.h.check().expect("different runs");
    }

    #[test]
    fn large_histories_check_quickly() {
        let t = T::new();
        t.counter(B);
        for i in 0..20_000u64 {
            let at = i * 10;
            t.w(B, "n1", at, at + 4, Outcome::Ok(i + 1));
            t.r(B, "n2", at + 5, at + 9, i + 1);
            t.r(
                &format!("run/p/{}/a", i % 50),
                "n3",
                at + 5,
                at + 9,
                rank::QUEUED + i / 10_000,
            );
        }
        let started = Instant::now();
        let s = t.h.check().expect("linearizable");
        assert_eq!(s.ops, 60_000);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // One stale read in the middle is found.
        t.r(B, "n3", 100_005, 100_006, 9_000);
        let v = t.failure();
        assert_eq!(v.total, 1);
    }
}
