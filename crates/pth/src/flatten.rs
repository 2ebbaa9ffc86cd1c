//! Flattening the unpickled dict into `(dotted key, tensor)` pairs, within
//! the [`ReadLimits`].
//!
//! Dicts are shared objects in the pickle's arena, so one dict can be
//! reached along many paths, each of which names its own copy of the
//! tensors below it: a kilobyte of pickle can nest a dict 22 levels deep
//! with each level holding the one below twice, 2^22 paths. So nothing is
//! built until the size of the result is known:
//!
//! 1. [`Census`] visits each dict once (memoised, so shared dicts cost once)
//!    and works out how many tensors it flattens to, how many key bytes,
//!    how deep it nests, and which of its entries lead to a tensor at all;
//! 2. the totals are checked against the limits and charged to the budget;
//! 3. [`Census::emit`] then builds exactly that, visiting only entries that
//!    lead to a tensor, so its work is linear in what it returns.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::mem::size_of;

use crate::limits::Budget;
use crate::pickle::{ObjId, Object, Pickle, TensorRef};
use crate::{Error, MAX_NESTING, RawTensor, ReadLimits, Result};

/// Bytes charged per flattened tensor besides its key: its entry in the
/// list of names, in the result, and in the duplicate check.
const TENSOR_OVERHEAD_BYTES: usize =
    size_of::<(String, &TensorRef)>() + size_of::<(String, RawTensor)>() + 2 * size_of::<&str>();

/// Every tensor under the dict `root`, in file order, with its dotted key.
///
/// # Errors
///
/// [`Error::TooDeep`] for dicts nested past [`MAX_NESTING`] or containing
/// themselves, [`Error::TooManyTensors`], [`Error::KeysTooLong`] or
/// [`Error::TooMuchData`] past the limits, and [`Error::DuplicateKey`].
pub(crate) fn flatten<'p>(
    pickle: &'p Pickle,
    root: ObjId,
    what: &str,
    limits: &ReadLimits,
    budget: &mut Budget<'_>,
) -> Result<Vec<(String, &'p TensorRef)>> {
    let mut census = Census {
        pickle,
        what,
        dicts: HashMap::new(),
    };
    let totals = census.count(root, 0)?;
    if totals.tensors > limits.max_tensors {
        return Err(Error::TooManyTensors {
            what: what.to_owned(),
            asked: totals.tensors,
            allowed: limits.max_tensors,
        });
    }
    if totals.key_bytes > limits.max_key_bytes {
        return Err(Error::KeysTooLong {
            what: what.to_owned(),
            asked: totals.key_bytes,
            allowed: limits.max_key_bytes,
        });
    }
    let overhead = totals.tensors.saturating_mul(TENSOR_OVERHEAD_BYTES as u64);
    budget.charge(overhead.saturating_add(totals.key_bytes), || {
        format!("the names of its {} tensors", totals.tensors)
    })?;

    // Both totals are within limits that fit in memory, hence in usize.
    let mut out = Vec::with_capacity(usize::try_from(totals.tensors).unwrap_or(0));
    census.emit(root, &mut String::new(), &mut out);
    debug_assert_eq!(out.len() as u64, totals.tensors);

    let mut seen = HashSet::with_capacity(out.len());
    if let Some((key, _)) = out.iter().find(|(key, _)| !seen.insert(key.as_str())) {
        return Err(Error::DuplicateKey {
            what: what.to_owned(),
            key: key.clone(),
        });
    }
    Ok(out)
}

/// What one dict flattens to, with saturating counts.
#[derive(Clone, Copy, Default)]
struct Totals {
    /// Tensors under the dict, counting each path to a shared dict.
    tensors: u64,
    /// Bytes of their keys relative to the dict (`fc.weight` under `model`).
    key_bytes: u64,
    /// Levels of dicts below this one; 0 when it holds no dict.
    height: usize,
}

enum Visit {
    /// Being counted: meeting it again means the dict contains itself.
    InProgress,
    Done {
        totals: Totals,
        /// Indices of the entries that lead to at least one tensor.
        leads_to_tensors: Vec<usize>,
    },
}

struct Census<'p, 'w> {
    pickle: &'p Pickle,
    what: &'w str,
    dicts: HashMap<ObjId, Visit>,
}

impl<'p> Census<'p, '_> {
    /// Counts the dict `id`, which sits `depth` levels below the root.
    /// Recursion is at most [`MAX_NESTING`] deep, and each dict's entries
    /// are walked once however many paths lead to it.
    fn count(&mut self, id: ObjId, depth: usize) -> Result<Totals> {
        let pickle = self.pickle;
        let Object::Dict(dict) = &pickle.objects[id] else {
            return Ok(Totals::default());
        };
        self.dicts.insert(id, Visit::InProgress);
        let mut totals = Totals::default();
        let mut leads_to_tensors = Vec::new();
        for (at, &(key, value)) in dict.entries.iter().enumerate() {
            let Some(name) = key_name(&pickle.objects[key]) else {
                continue;
            };
            let name_len = name.len() as u64;
            match &pickle.objects[value] {
                Object::Tensor(_) => {
                    totals.tensors = totals.tensors.saturating_add(1);
                    totals.key_bytes = totals.key_bytes.saturating_add(name_len);
                    leads_to_tensors.push(at);
                }
                Object::Dict(_) => {
                    let child = match self.dicts.get(&value) {
                        Some(Visit::Done { totals, .. }) => *totals,
                        Some(Visit::InProgress) => return Err(self.too_deep(&name)),
                        None if depth + 1 >= MAX_NESTING => return Err(self.too_deep(&name)),
                        None => self
                            .count(value, depth + 1)
                            .map_err(|e| prefix_key(e, &name))?,
                    };
                    if depth + 1 + child.height >= MAX_NESTING {
                        return Err(self.too_deep(&name));
                    }
                    totals.height = totals.height.max(child.height + 1);
                    if child.tensors > 0 {
                        // Each tensor below gains `name.` in front.
                        let prefixes = child.tensors.saturating_mul(name_len + 1);
                        totals.tensors = totals.tensors.saturating_add(child.tensors);
                        totals.key_bytes = totals
                            .key_bytes
                            .saturating_add(child.key_bytes)
                            .saturating_add(prefixes);
                        leads_to_tensors.push(at);
                    }
                }
                // Epoch counters, names, hyper-parameters, lists: not weights.
                _ => {}
            }
        }
        self.dicts.insert(
            id,
            Visit::Done {
                totals,
                leads_to_tensors,
            },
        );
        Ok(totals)
    }

    /// Pushes `(key, tensor)` for every tensor under the counted dict `id`,
    /// keys prefixed with `path`.
    fn emit(&self, id: ObjId, path: &mut String, out: &mut Vec<(String, &'p TensorRef)>) {
        let (
            Object::Dict(dict),
            Some(Visit::Done {
                leads_to_tensors, ..
            }),
        ) = (&self.pickle.objects[id], self.dicts.get(&id))
        else {
            return;
        };
        for &at in leads_to_tensors {
            let (key, value) = dict.entries[at];
            let Some(name) = key_name(&self.pickle.objects[key]) else {
                continue;
            };
            let mark = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&name);
            match &self.pickle.objects[value] {
                Object::Tensor(tensor) => out.push((path.clone(), tensor)),
                Object::Dict(_) => self.emit(value, path, out),
                _ => {}
            }
            path.truncate(mark);
        }
    }

    fn too_deep(&self, key: &str) -> Error {
        Error::TooDeep {
            what: self.what.to_owned(),
            key: key.to_owned(),
        }
    }
}

/// The key segment a dict key gives, or `None` for a key that cannot name
/// a weight (a tuple, say).
fn key_name(key: &Object) -> Option<Cow<'_, str>> {
    match key {
        Object::Str(s) => Some(Cow::Borrowed(s)),
        // Optimizer state is keyed by parameter index.
        Object::Int(i) => Some(Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// Puts `name.` in front of the key of a [`Error::TooDeep`] coming up from
/// the dict under `name`, so the error names the whole path once.
fn prefix_key(error: Error, name: &str) -> Error {
    match error {
        Error::TooDeep { what, key } => Error::TooDeep {
            what,
            key: format!("{name}.{key}"),
        },
        other => other,
    }
}
