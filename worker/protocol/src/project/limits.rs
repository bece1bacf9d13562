//! Bounded YAML loading: the only way project text becomes a tree.
//!
//! JobServ's PyYAML loader grows past 11 GB on a nine-level alias bomb. We keep every cost bounded:
//!
//! * **Size** is checked on the raw text before anything is parsed ([`Limits::max_document_bytes`]).
//! * **Nesting depth** and **alias expansion** are enforced *while* serde_yaml replays the document into our
//!   own [`Node`] tree. serde_yaml 0.9 first turns the text into a flat event list (linear in the size, which
//!   is already bounded) and replays an alias by jumping back to its anchor's events, lazily. Our visitor
//!   charges every node it builds against [`Limits::max_nodes`] and every scalar byte against
//!   [`Limits::max_expanded_bytes`], and aborts the moment either runs out. So expansion can never cost more
//!   than those budgets in time or memory, however the aliases are arranged.
//!
//! We chose a budget over counting `&anchor` / `*alias` tokens in the text: a textual pre-scan cannot tell
//! `&&` or `*` in a shell script or a host-tag glob from YAML syntax, and an alias count alone does not bound
//! the expanded size. A normal project (no aliases) of the maximum size stays well inside both budgets.
//!
//! The tree also gives us PyYAML's semantics where serde_yaml differs: a duplicate mapping key replaces the
//! earlier value (JobServ's `persistent-volume.yml` example has a run with two `script` keys, and PyYAML keeps
//! the last), and `<<` merge keys are applied (explicit keys win over merged ones, earlier merge sources win
//! over later ones).
use super::error::{DefinitionError, LimitKind};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

/// Bounds applied to every project document. [`Limits::default`] is what the server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of YAML text.
    pub max_document_bytes: usize,
    /// Nested collections (the top-level mapping is depth 1; a normal project needs about 8).
    pub max_depth: usize,
    /// Nodes (scalars and collections) after alias expansion.
    pub max_nodes: usize,
    /// Scalar bytes after alias expansion.
    pub max_expanded_bytes: usize,
    /// Runs one trigger may create once `loop-on` matrices are expanded.
    pub max_runs_per_trigger: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_document_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 200_000,
            max_expanded_bytes: 4 * 1024 * 1024,
            max_runs_per_trigger: 1000,
        }
    }
}

/// A loaded YAML value. Scalars keep the types YAML 1.2 (serde_yaml) gives them; the schema walk decides
/// what it accepts where.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// In document order; keys are unique (a later duplicate replaced the earlier value in place).
    Map(Vec<(String, Node)>),
}

impl Node {
    /// What a user would call this kind of value, for "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// Parses `yaml` into a [`Node`] tree within `limits`.
pub(crate) fn load(yaml: &str, limits: &Limits) -> Result<Node, DefinitionError> {
    if yaml.len() > limits.max_document_bytes {
        return Err(DefinitionError::limit(
            LimitKind::DocumentSize,
            format!(
                "document is {} bytes, more than the limit of {} bytes",
                yaml.len(),
                limits.max_document_bytes
            ),
        ));
    }
    let budget = Budget {
        nodes_left: Cell::new(limits.max_nodes),
        bytes_left: Cell::new(limits.max_expanded_bytes),
        max_depth: limits.max_depth,
        tripped: Cell::new(None),
    };
    let seed = NodeSeed {
        budget: &budget,
        depth: 0,
    };
    match seed.deserialize(serde_yaml::Deserializer::from_str(yaml)) {
        Ok(node) => Ok(node),
        Err(err) => Err(classify(err, budget.tripped.get(), limits)),
    }
}

/// Turns a serde_yaml error into ours, telling our own budget aborts (and serde_yaml's built-in ones) apart
/// from syntax errors.
fn classify(
    err: serde_yaml::Error,
    tripped: Option<LimitKind>,
    limits: &Limits,
) -> DefinitionError {
    let (line, column) = match err.location() {
        Some(loc) => (Some(loc.line()), Some(loc.column())),
        None => (None, None),
    };
    let text = err.to_string();
    // serde_yaml has its own guards (128 levels, a jump count); report them as the limits they are.
    let kind = tripped.or_else(|| {
        if text.starts_with("repetition limit exceeded") {
            Some(LimitKind::AliasExpansion)
        } else if text.starts_with("recursion limit exceeded") {
            Some(LimitKind::NestingDepth)
        } else {
            None
        }
    });
    if let Some(kind) = kind {
        let message = match kind {
            LimitKind::NestingDepth => {
                format!("nesting is deeper than the limit of {} levels", limits.max_depth)
            }
            _ => format!(
                "the document holds more than {} values or {} bytes of text once aliases are expanded",
                limits.max_nodes, limits.max_expanded_bytes
            ),
        };
        return DefinitionError::Limit {
            kind,
            message,
            line,
            column,
        };
    }
    match (line, column) {
        (Some(line), Some(column)) => DefinitionError::Syntax {
            line,
            column,
            message: text,
        },
        // No position: empty input or more than one document. Still a syntax-level problem of the text.
        _ => DefinitionError::Syntax {
            line: 1,
            column: 1,
            message: text,
        },
    }
}

struct Budget {
    nodes_left: Cell<usize>,
    bytes_left: Cell<usize>,
    max_depth: usize,
    tripped: Cell<Option<LimitKind>>,
}

impl Budget {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let nodes = self.nodes_left.get();
        let left = self.bytes_left.get();
        if nodes == 0 || bytes > left {
            self.tripped.set(Some(LimitKind::AliasExpansion));
            return Err(E::custom("alias expansion limit exceeded"));
        }
        self.nodes_left.set(nodes - 1);
        self.bytes_left.set(left - bytes);
        Ok(())
    }

    fn enter<E: de::Error>(&self, depth: usize) -> Result<(), E> {
        if depth > self.max_depth {
            self.tripped.set(Some(LimitKind::NestingDepth));
            return Err(E::custom("nesting depth limit exceeded"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct NodeSeed<'b> {
    budget: &'b Budget,
    /// Depth of the collection this node sits in (0 for the root).
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        self.budget.charge(0)?;
        match i128::try_from(v) {
            Ok(v) => Ok(Node::Int(v)),
            Err(_) => Err(E::custom("integer too large")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        // Charged before the copy: the borrowed text is the event list's, so nothing has grown yet.
        self.budget.charge(v.len())?;
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.budget.charge(0)?;
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.budget.charge(0)?;
        let inner = NodeSeed {
            budget: self.budget,
            depth: self.depth + 1,
        };
        self.budget.enter(inner.depth)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.budget.charge(0)?;
        let inner = NodeSeed {
            budget: self.budget,
            depth: self.depth + 1,
        };
        self.budget.enter(inner.depth)?;
        let mut entries: Vec<(String, Node)> = Vec::new();
        // Key → position in `entries`; a linear search would make a 100k-key mapping quadratic.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merges: Vec<Node> = Vec::new();
        while let Some(key) = map.next_key_seed(inner)? {
            let value = map.next_value_seed(inner)?;
            let key = match key {
                Node::Str(s) => s,
                // PyYAML would give an int key; JobServ then used it as a name, so its text is what counts.
                Node::Int(i) => i.to_string(),
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping keys must be strings, found {}",
                        other.kind()
                    )))
                }
            };
            if key == "<<" {
                merges.push(value);
                continue;
            }
            match index.get(&key) {
                // PyYAML semantics: the last duplicate wins (serde_yaml would reject it).
                Some(&at) => entries[at].1 = value,
                None => {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        for merge in merges {
            let sources = match merge {
                Node::Map(m) => vec![m],
                Node::Seq(items) => {
                    let mut maps = Vec::new();
                    for item in items {
                        match item {
                            Node::Map(m) => maps.push(m),
                            other => {
                                return Err(de::Error::custom(format!(
                                    "a `<<` merge list must hold mappings, found {}",
                                    other.kind()
                                )))
                            }
                        }
                    }
                    maps
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "a `<<` merge key needs a mapping, found {}",
                        other.kind()
                    )))
                }
            };
            for source in sources {
                for (k, v) in source {
                    // Moved, not cloned: merging never allocates beyond what the budget already paid for.
                    if !index.contains_key(&k) {
                        index.insert(k.clone(), entries.len());
                        entries.push((k, v));
                    }
                }
            }
        }
        Ok(Node::Map(entries))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Node, A::Error> {
        Err(de::Error::custom("YAML tags (`!tag`) are not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(String, Node)] {
        match node {
            Node::Map(entries) => entries,
            other => panic!("expected a mapping, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_in_the_first_position() {
        let node = load("a: 1\nb: 2\na: 3\n", &Limits::default()).expect("loads");
        assert_eq!(
            map(&node),
            [
                ("a".to_owned(), Node::Int(3)),
                ("b".to_owned(), Node::Int(2))
            ]
        );
    }

    #[test]
    fn merge_keys_fill_in_without_overriding() {
        let yaml = "base: &b {x: 1, y: 2}\nother: &o {y: 9, z: 3}\nrun:\n  <<: [*b, *o]\n  x: 0\n";
        let node = load(yaml, &Limits::default()).expect("loads");
        let run = &map(&node)[2].1;
        assert_eq!(
            map(run),
            [
                ("x".to_owned(), Node::Int(0)),
                ("y".to_owned(), Node::Int(2)),
                ("z".to_owned(), Node::Int(3)),
            ]
        );
    }

    #[test]
    fn node_budget_counts_expanded_aliases() {
        let yaml = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n";
        // root map + a(4) + b(1 + 3*4) = 18 nodes, plus 2 key strings = 20.
        let tight = Limits {
            max_nodes: 19,
            ..Limits::default()
        };
        let err = load(yaml, &tight).expect_err("over budget");
        assert!(
            matches!(
                err,
                DefinitionError::Limit {
                    kind: LimitKind::AliasExpansion,
                    ..
                }
            ),
            "{err:?}"
        );
        let enough = Limits {
            max_nodes: 20,
            ..Limits::default()
        };
        assert!(load(yaml, &enough).is_ok());
    }

    #[test]
    fn depth_limit_is_exact() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        assert!(load("a: [[1]]\n", &limits).is_ok());
        let err = load("a: [[[1]]]\n", &limits).expect_err("depth 4");
        assert!(
            matches!(
                err,
                DefinitionError::Limit {
                    kind: LimitKind::NestingDepth,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn tags_and_non_string_keys_are_refused_with_a_position() {
        for yaml in ["a: !custom x\n", "? [1, 2]\n: v\n", "true: 1\n"] {
            match load(yaml, &Limits::default()) {
                Err(DefinitionError::Syntax { line, .. }) => assert!(line >= 1),
                other => panic!("{yaml:?}: {other:?}"),
            }
        }
        // Integer keys are names like any other (PyYAML would have given an int key).
        let node = load("1: x\n", &Limits::default()).expect("loads");
        assert_eq!(map(&node)[0].0, "1");
    }
}
