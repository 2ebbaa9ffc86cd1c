//! A restricted pickle machine for the `data.pkl` that `torch.save` writes.
//!
//! It understands the opcodes of protocols 2–5 that a state dict can
//! contain, and it never calls anything: the only callables are an allowlist
//! of torch and `collections` names, each re-implemented here as plain data
//! construction. Any other global is an error naming it.
//!
//! Objects live in one arena and are referred to by index, so memo sharing,
//! mutation after memoization (`SETITEMS` on a memoized dict) and even cycles
//! cost nothing special: a memoized object fetched N times is still one
//! object, never a copy. Dropping a deeply nested structure cannot overflow
//! the stack.
//!
//! Hostile input is held to work and memory proportional to what it asks
//! for, and what it asks for to the read's [`Budget`]:
//! - every allocation the machine makes (objects, stack and memo slots,
//!   container items, dict entries, string text, tensor shapes) is charged
//!   to the budget before it is made; an opcode that copies (an
//!   `OrderedDict` built from a memoized list of pairs, a tensor built from
//!   a memoized shape) is charged for the whole copy, however few bytes the
//!   opcode itself took;
//! - strings are interned, so a long string reused as a key in many dicts is
//!   stored once and hashed once: dict keys compare by address.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::rc::Rc;

use crate::limits::Budget;
use crate::{DType, Error, Result};

/// Index of an object in [`Pickle::objects`].
pub(crate) type ObjId = usize;

/// The result of running a pickle: every object it built, and the root.
pub(crate) struct Pickle {
    pub(crate) objects: Vec<Object>,
    pub(crate) root: ObjId,
}

/// A value built by the machine.
pub(crate) enum Object {
    None,
    // Booleans, floats and byte strings only need to be skipped: no field
    // of a state dict reads them, so their values are not kept.
    Bool,
    Int(i64),
    Float,
    /// Interned: equal text is one allocation.
    Str(Rc<str>),
    Bytes,
    Tuple(Vec<ObjId>),
    List(Vec<ObjId>),
    // The larger variants are boxed to keep every object small: a state
    // dict's pickle builds about twenty objects per tensor.
    Dict(Box<Dict>),
    Global(Global),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
}

impl Object {
    /// What the object is, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool => "bool",
            Object::Int(_) => "int",
            Object::Float => "float",
            Object::Str(_) => "str",
            Object::Bytes => "bytes",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Global(_) => "global",
            Object::Storage(_) => "storage",
            Object::Tensor(_) => "tensor",
        }
    }

    /// Bytes the object holds in its box, beyond `size_of::<Object>()`.
    fn boxed_bytes(&self) -> usize {
        match self {
            Object::Dict(_) => size_of::<Dict>(),
            Object::Storage(_) => size_of::<StorageRef>(),
            Object::Tensor(_) => size_of::<TensorRef>(),
            _ => 0,
        }
    }
}

/// A dict in insertion order; a later `SETITEM` with an equal str or int key
/// replaces the value in place, as Python does.
#[derive(Default)]
pub(crate) struct Dict {
    pub(crate) entries: Vec<(ObjId, ObjId)>,
    index: HashMap<DictKey, usize>,
}

#[derive(PartialEq, Eq, Hash)]
enum DictKey {
    Str(InternedStr),
    Int(i64),
}

/// A string the machine interned, hashed and compared by address: since
/// every string is interned, equal text means the same allocation, and a
/// key costs O(1) to hash however long it is.
#[derive(Clone)]
pub(crate) struct InternedStr(Rc<str>);

impl std::ops::Deref for InternedStr {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq for InternedStr {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InternedStr {}

impl Hash for InternedStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Rc::as_ptr(&self.0), state);
    }
}

/// The only globals a checkpoint may name.
#[derive(Clone, Copy)]
pub(crate) enum Global {
    /// `collections.OrderedDict`
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`
    RebuildParameterWithState,
    /// `torch.FloatStorage` and friends.
    StorageClass(DType),
    /// `torch.float32` and friends.
    Dtype(DType),
}

/// A storage named by a persistent id: its bytes are the archive entry
/// `<prefix>/data/<key>`.
#[derive(Clone)]
pub(crate) struct StorageRef {
    pub(crate) dtype: DType,
    /// Interned, so storages can be looked up by it in O(1).
    pub(crate) key: InternedStr,
    /// Length in elements, as the pickle claims; checked against the entry.
    pub(crate) numel: u64,
}

/// A tensor view of a storage, not yet read.
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

/// Resolves `module.name` against the allowlist.
fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch", name) => {
            if let Some(class) = name.strip_suffix("Storage") {
                DType::from_storage_class(class).map(Global::StorageClass)
            } else {
                DType::from_torch_name(name).map(Global::Dtype)
            }
        }
        _ => None,
    }
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

/// Bytes charged for one memo entry (key, value and hash table overhead).
const MEMO_ENTRY_BYTES: usize = 32;

/// Bytes charged for one dict entry: the `(key, value)` pair, its index
/// entry with hash table overhead, and the key lookup made to insert it.
const DICT_ENTRY_BYTES: usize = 64;

/// Bytes charged for one item of a tuple, list or stack.
const SLOT_BYTES: usize = size_of::<ObjId>();

/// Runs the pickle in `input` to its `STOP`, charging what it builds to
/// `budget`. `what` names the file in errors.
pub(crate) fn run(input: &[u8], what: &str, budget: &mut Budget<'_>) -> Result<Pickle> {
    Machine {
        input,
        what,
        budget,
        pos: 0,
        op_start: 0,
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        strings: HashSet::new(),
    }
    .run()
}

fn malformed_at(what: &str, offset: usize, message: String) -> Error {
    Error::Pickle {
        what: what.to_owned(),
        offset,
        message,
    }
}

struct Machine<'a, 'b, 'c> {
    input: &'a [u8],
    what: &'a str,
    budget: &'b mut Budget<'c>,
    /// Next byte to read.
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    op_start: usize,
    objects: Vec<Object>,
    stack: Vec<ObjId>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, ObjId>,
    /// Every string built so far, so that equal text shares one allocation.
    strings: HashSet<Rc<str>>,
}

impl<'a> Machine<'a, '_, '_> {
    fn run(mut self) -> Result<Pickle> {
        loop {
            self.op_start = self.pos;
            let opcode = self.read_u8()?;
            match opcode {
                op::PROTO => {
                    let version = self.read_u8()?;
                    if version > 5 {
                        return Err(self.malformed(format!("unknown pickle protocol {version}")));
                    }
                }
                op::FRAME => {
                    // Frames only batch reads; the whole pickle is in memory.
                    self.take(8)?;
                }
                op::STOP => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        objects: self.objects,
                        root,
                    });
                }
                op::MARK => {
                    self.charge(size_of::<usize>())?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    self.pop()?;
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let top = self.top()?;
                    self.push_id(top)?;
                }

                op::NONE => self.push(Object::None)?,
                op::NEWTRUE | op::NEWFALSE => self.push(Object::Bool)?,
                op::BININT => {
                    let v = i32::from_le_bytes(self.take_array()?);
                    self.push(Object::Int(i64::from(v)))?;
                }
                op::BININT1 => {
                    let v = self.read_u8()?;
                    self.push(Object::Int(i64::from(v)))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.take_array()?);
                    self.push(Object::Int(i64::from(v)))?;
                }
                op::LONG1 => {
                    let n = usize::from(self.read_u8()?);
                    self.read_long(n)?;
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.take_array()?);
                    let n = usize::try_from(n)
                        .map_err(|_| self.malformed("negative LONG4 length".into()))?;
                    self.read_long(n)?;
                }
                op::BINFLOAT => {
                    self.take(8)?;
                    self.push(Object::Float)?;
                }

                op::SHORT_BINUNICODE => {
                    let n = u64::from(self.read_u8()?);
                    self.read_unicode(n)?;
                }
                op::BINUNICODE => {
                    let n = u64::from(u32::from_le_bytes(self.take_array()?));
                    self.read_unicode(n)?;
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(self.take_array()?);
                    self.read_unicode(n)?;
                }
                op::SHORT_BINSTRING => {
                    let n = u64::from(self.read_u8()?);
                    self.read_py2_string(n)?;
                }
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.take_array()?);
                    let n = u64::try_from(n)
                        .map_err(|_| self.malformed("negative BINSTRING length".into()))?;
                    self.read_py2_string(n)?;
                }
                op::SHORT_BINBYTES => {
                    let n = u64::from(self.read_u8()?);
                    self.read_bytes(n)?;
                }
                op::BINBYTES => {
                    let n = u64::from(u32::from_le_bytes(self.take_array()?));
                    self.read_bytes(n)?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = u64::from_le_bytes(self.take_array()?);
                    self.read_bytes(n)?;
                }

                op::EMPTY_TUPLE => self.push(Object::Tuple(Vec::new()))?,
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Object::Tuple(items))?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(opcode - op::TUPLE1 + 1);
                    let at = self
                        .stack
                        .len()
                        .checked_sub(n)
                        .ok_or_else(|| self.malformed("stack underflow".into()))?;
                    self.check_no_mark_above(at)?;
                    self.charge(n * SLOT_BYTES)?;
                    let items = self.stack.split_off(at);
                    self.push(Object::Tuple(items))?;
                }
                op::EMPTY_LIST => self.push(Object::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push(Object::List(items))?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.charge(SLOT_BYTES)?;
                    self.list_mut(list)?.push(item);
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.charge(items.len() * SLOT_BYTES)?;
                    self.list_mut(list)?.extend(items);
                }
                op::EMPTY_DICT => self.push(Object::Dict(Box::default()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let dict = self.add(Object::Dict(Box::default()))?;
                    self.set_items(dict, &items)?;
                    self.push_id(dict)?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, &[key, value])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, &items)?;
                }

                op::BINPUT => {
                    let index = u64::from(self.read_u8()?);
                    self.memo_put(index)?;
                }
                op::LONG_BINPUT => {
                    let index = u64::from(u32::from_le_bytes(self.take_array()?));
                    self.memo_put(index)?;
                }
                op::MEMOIZE => {
                    let index = self.memo.len() as u64;
                    self.memo_put(index)?;
                }
                op::BINGET => {
                    let index = u64::from(self.read_u8()?);
                    self.memo_get(index)?;
                }
                op::LONG_BINGET => {
                    let index = u64::from(u32::from_le_bytes(self.take_array()?));
                    self.memo_get(index)?;
                }

                op::GLOBAL => {
                    let module = self.read_line()?;
                    let name = self.read_line()?;
                    self.push_global(&module, &name)?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Object::Str(module), Object::Str(name)) =
                        (&self.objects[module], &self.objects[name])
                    else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings".into()));
                    };
                    let (module, name) = (module.clone(), name.clone());
                    self.push_global(&module, &name)?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.call(callable, args)?;
                    self.push_id(result)?;
                }
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    match self.objects[class] {
                        // `OrderedDict.__new__` ignores its arguments.
                        Object::Global(Global::OrderedDict) => {
                            self.push(Object::Dict(Box::default()))?;
                        }
                        _ => {
                            let _ = args;
                            return Err(self.malformed(format!(
                                "NEWOBJ on a {} is not supported",
                                self.objects[class].kind()
                            )));
                        }
                    }
                }
                op::BUILD => {
                    let _state = self.pop()?;
                    let target = self.top()?;
                    // The only BUILD in a state dict sets an OrderedDict's
                    // `_metadata` attribute (module versions); ignore it.
                    if !matches!(self.objects[target], Object::Dict(_)) {
                        return Err(self.malformed(format!(
                            "BUILD on a {} is not supported",
                            self.objects[target].kind()
                        )));
                    }
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push(Object::Storage(Box::new(storage)))?;
                }

                other => {
                    return Err(Error::UnsupportedOpcode {
                        what: self.what.to_owned(),
                        opcode: other,
                        offset: self.op_start,
                    });
                }
            }
        }
    }

    fn malformed(&self, message: String) -> Error {
        malformed_at(self.what, self.op_start, message)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let remaining = self.input.len() - self.pos;
        let n = match usize::try_from(n) {
            Ok(n) if n <= remaining => n,
            _ => {
                return Err(self.malformed(format!(
                    "needs {n} bytes but only {remaining} remain (truncated?)"
                )));
            }
        };
        let input = self.input;
        let bytes = &input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N as u64)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn read_line(&mut self) -> Result<String> {
        let rest = &self.input[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("unterminated GLOBAL name".into()));
        };
        let line = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.malformed("GLOBAL name is not UTF-8".into()))?
            .to_owned();
        self.pos += len + 1;
        Ok(line)
    }

    /// A little-endian two's-complement integer of `n` bytes.
    fn read_long(&mut self, n: usize) -> Result<()> {
        if n > 8 {
            return Err(self.malformed(format!("{n}-byte integer is too large")));
        }
        let bytes = self.take(n as u64)?;
        let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            [0xff; 8]
        } else {
            [0; 8]
        };
        buf[..n].copy_from_slice(bytes);
        self.push(Object::Int(i64::from_le_bytes(buf)))?;
        Ok(())
    }

    fn read_unicode(&mut self, n: u64) -> Result<()> {
        let bytes = self.take(n)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| self.malformed("string is not UTF-8".into()))?;
        let text = self.intern(text)?;
        self.push(Object::Str(text))?;
        Ok(())
    }

    /// Python 2 `str`: text when it is UTF-8, bytes otherwise.
    fn read_py2_string(&mut self, n: u64) -> Result<()> {
        let bytes = self.take(n)?;
        let object = match std::str::from_utf8(bytes) {
            Ok(text) => Object::Str(self.intern(text)?),
            Err(_) => Object::Bytes,
        };
        self.push(object)?;
        Ok(())
    }

    /// The one shared copy of `text`, made (and charged for) the first time
    /// it is seen.
    fn intern(&mut self, text: &str) -> Result<Rc<str>> {
        if let Some(interned) = self.strings.get(text) {
            return Ok(Rc::clone(interned));
        }
        self.charge(text.len() + size_of::<Rc<str>>() + SLOT_BYTES)?;
        let interned: Rc<str> = Rc::from(text);
        self.strings.insert(Rc::clone(&interned));
        Ok(interned)
    }

    fn read_bytes(&mut self, n: u64) -> Result<()> {
        self.take(n)?;
        self.push(Object::Bytes)?;
        Ok(())
    }

    /// Counts `bytes` against the read's budget, before they are allocated.
    fn charge(&mut self, bytes: usize) -> Result<()> {
        let offset = self.op_start;
        self.budget.charge(bytes as u64, || {
            format!("unpickling data.pkl (at byte {offset})")
        })
    }

    /// Adds `object` to the arena. What it holds on the heap besides its
    /// box was charged by whoever built it.
    fn add(&mut self, object: Object) -> Result<ObjId> {
        self.charge(size_of::<Object>() + object.boxed_bytes())?;
        self.objects.push(object);
        Ok(self.objects.len() - 1)
    }

    fn push(&mut self, object: Object) -> Result<()> {
        let id = self.add(object)?;
        self.push_id(id)
    }

    /// Pushes an object already in the arena (a memo fetch, a `DUP`).
    fn push_id(&mut self, id: ObjId) -> Result<()> {
        self.charge(SLOT_BYTES)?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<ObjId> {
        self.check_no_mark_above(self.stack.len().saturating_sub(1))?;
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow".into()))
    }

    fn top(&self) -> Result<ObjId> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow".into()))
    }

    /// Errors when a `MARK` sits above stack position `at`: popping past a
    /// mark means the pickle is malformed.
    fn check_no_mark_above(&self, at: usize) -> Result<()> {
        match self.marks.last() {
            Some(&mark) if mark > at => Err(self.malformed("popped past a MARK".into())),
            _ => Ok(()),
        }
    }

    /// Pops everything above the latest `MARK`, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<ObjId>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("no MARK to pop to".into()))?;
        if mark > self.stack.len() {
            return Err(self.malformed("MARK above the stack".into()));
        }
        self.charge((self.stack.len() - mark) * SLOT_BYTES)?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u64) -> Result<()> {
        let top = self.top()?;
        self.charge(MEMO_ENTRY_BYTES)?;
        self.memo.insert(index, top);
        Ok(())
    }

    /// Pushes a memoized object: the object itself, shared, never a copy.
    fn memo_get(&mut self, index: u64) -> Result<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.malformed(format!("memo entry {index} was never stored")))?;
        self.push_id(id)
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<()> {
        let global = resolve_global(module, name).ok_or_else(|| Error::ForbiddenGlobal {
            what: self.what.to_owned(),
            global: format!("{module}.{name}"),
        })?;
        self.push(Object::Global(global))?;
        Ok(())
    }

    fn list_mut(&mut self, id: ObjId) -> Result<&mut Vec<ObjId>> {
        let (what, offset) = (self.what, self.op_start);
        match &mut self.objects[id] {
            Object::List(items) => Ok(items),
            other => Err(malformed_at(
                what,
                offset,
                format!("APPEND to a {}, not a list", other.kind()),
            )),
        }
    }

    /// Sets `items` (key, value, key, value, ...) on the dict `dict`.
    fn set_items(&mut self, dict: ObjId, items: &[ObjId]) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of items".into()));
        }
        self.charge(items.len() / 2 * DICT_ENTRY_BYTES)?;
        let keys: Vec<Option<DictKey>> = items
            .iter()
            .step_by(2)
            .map(|&key| match &self.objects[key] {
                Object::Str(s) => Some(DictKey::Str(InternedStr(Rc::clone(s)))),
                Object::Int(i) => Some(DictKey::Int(*i)),
                _ => None,
            })
            .collect();
        let (what, offset) = (self.what, self.op_start);
        let dict = match &mut self.objects[dict] {
            Object::Dict(dict) => dict,
            other => {
                return Err(malformed_at(
                    what,
                    offset,
                    format!("SETITEM on a {}, not a dict", other.kind()),
                ));
            }
        };
        for (pair, dict_key) in items.chunks_exact(2).zip(keys) {
            let entry = (pair[0], pair[1]);
            match dict_key {
                Some(dict_key) => match dict.index.get(&dict_key) {
                    Some(&at) => dict.entries[at] = entry,
                    None => {
                        dict.index.insert(dict_key, dict.entries.len());
                        dict.entries.push(entry);
                    }
                },
                None => dict.entries.push(entry),
            }
        }
        Ok(())
    }

    /// `REDUCE`: applies an allowlisted global to an argument tuple.
    fn call(&mut self, callable: ObjId, args: ObjId) -> Result<ObjId> {
        let Object::Global(global) = self.objects[callable] else {
            return Err(self.malformed(format!(
                "REDUCE calls a {}, not an allowed global",
                self.objects[callable].kind()
            )));
        };
        let Object::Tuple(args) = &self.objects[args] else {
            return Err(self.malformed("REDUCE arguments are not a tuple".into()));
        };
        // No allowed global takes more than 7 arguments: refuse longer
        // tuples before copying them (they may be reused through the memo).
        if args.len() > 7 {
            return Err(self.malformed(format!(
                "REDUCE with {} arguments; no allowed global takes that many",
                args.len()
            )));
        }
        let args = args.clone();
        match global {
            Global::OrderedDict => {
                let dict = self.add(Object::Dict(Box::default()))?;
                match args.as_slice() {
                    [] => {}
                    [pairs] => {
                        // A memoized list of pairs may feed any number of
                        // OrderedDicts: each costs a full copy.
                        self.charge(self.tuple_len(*pairs) * 2 * SLOT_BYTES)?;
                        let items = self.pair_items(*pairs)?;
                        self.set_items(dict, &items)?;
                    }
                    _ => return Err(self.malformed("OrderedDict takes one argument".into())),
                }
                Ok(dict)
            }
            Global::RebuildTensorV2 => {
                let tensor = self.rebuild_tensor(&args)?;
                self.add(Object::Tensor(Box::new(tensor)))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                // (data, requires_grad, backward_hooks[, state]): the data is
                // all a state dict needs.
                let expected = if matches!(global, Global::RebuildParameter) {
                    3
                } else {
                    4
                };
                match args.first() {
                    Some(&data)
                        if args.len() == expected
                            && matches!(self.objects[data], Object::Tensor(_)) =>
                    {
                        Ok(data)
                    }
                    _ => Err(self.malformed(format!(
                        "_rebuild_parameter takes (tensor, requires_grad, hooks{}), got {} \
                         arguments",
                        if expected == 4 { ", state" } else { "" },
                        args.len()
                    ))),
                }
            }
            Global::StorageClass(dtype) | Global::Dtype(dtype) => Err(self.malformed(format!(
                "calling torch {} type objects is not supported",
                dtype.name()
            ))),
        }
    }

    /// The list or tuple of `(key, value)` pairs `pairs`, flattened to
    /// `[key, value, key, value, ...]`.
    fn pair_items(&self, pairs: ObjId) -> Result<Vec<ObjId>> {
        let pairs = match &self.objects[pairs] {
            Object::List(p) | Object::Tuple(p) => p,
            other => {
                return Err(self.malformed(format!("OrderedDict built from a {}", other.kind())));
            }
        };
        let mut items = Vec::with_capacity(pairs.len() * 2);
        for &pair in pairs {
            match &self.objects[pair] {
                Object::Tuple(kv) | Object::List(kv) if kv.len() == 2 => {
                    items.extend_from_slice(kv);
                }
                _ => {
                    return Err(
                        self.malformed("OrderedDict item is not a (key, value) pair".into())
                    );
                }
            }
        }
        Ok(items)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride,
    /// requires_grad, backward_hooks[, metadata])`.
    fn rebuild_tensor(&mut self, args: &[ObjId]) -> Result<TensorRef> {
        if !(6..=7).contains(&args.len()) {
            return Err(self.malformed(format!(
                "_rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                args.len()
            )));
        }
        let storage = match &self.objects[args[0]] {
            Object::Storage(storage) => StorageRef::clone(storage),
            other => {
                return Err(self.malformed(format!(
                    "_rebuild_tensor_v2 needs a storage, got a {}",
                    other.kind()
                )));
            }
        };
        // The size and stride tuples may be memoized and shared by any
        // number of tensors; each tensor keeps its own copy.
        let dims = self.tuple_len(args[2]) + self.tuple_len(args[3]);
        self.charge(dims * size_of::<usize>())?;
        let offset = self.non_negative(args[1], "storage offset")?;
        let shape = self.int_tuple(args[2], "size")?;
        let stride = self.int_tuple(args[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!(
                "tensor has {} sizes but {} strides",
                shape.len(),
                stride.len()
            )));
        }
        Ok(TensorRef {
            storage,
            offset,
            shape,
            stride,
        })
    }

    fn non_negative(&self, id: ObjId, what: &str) -> Result<usize> {
        match self.objects[id] {
            Object::Int(v) => {
                usize::try_from(v).map_err(|_| self.malformed(format!("negative {what} {v}")))
            }
            ref other => Err(self.malformed(format!("{what} is a {}, not an int", other.kind()))),
        }
    }

    /// Items in the tuple or list `id`; 0 for anything else.
    fn tuple_len(&self, id: ObjId) -> usize {
        match &self.objects[id] {
            Object::Tuple(items) | Object::List(items) => items.len(),
            _ => 0,
        }
    }

    fn int_tuple(&self, id: ObjId, what: &str) -> Result<Vec<usize>> {
        match &self.objects[id] {
            Object::Tuple(items) | Object::List(items) => items
                .iter()
                .map(|&item| self.non_negative(item, what))
                .collect(),
            other => {
                Err(self.malformed(format!("tensor {what} is a {}, not a tuple", other.kind())))
            }
        }
    }

    /// `BINPERSID` with `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&self, pid: ObjId) -> Result<StorageRef> {
        let Object::Tuple(parts) = &self.objects[pid] else {
            return Err(self.malformed("persistent id is not a tuple".into()));
        };
        let [tag, class, key, _location, numel] = parts.as_slice() else {
            return Err(self.malformed(format!("persistent id has {} fields, not 5", parts.len())));
        };
        if !matches!(&self.objects[*tag], Object::Str(s) if &**s == "storage") {
            return Err(self.malformed("persistent id is not a ('storage', ...) tuple".into()));
        }
        let dtype = match self.objects[*class] {
            Object::Global(Global::StorageClass(dtype)) => dtype,
            ref other => {
                return Err(self.malformed(format!(
                    "persistent id names a {} where a torch storage class belongs",
                    other.kind()
                )));
            }
        };
        let Object::Str(key) = &self.objects[*key] else {
            return Err(self.malformed("persistent id storage key is not a string".into()));
        };
        let numel = self.non_negative(*numel, "storage size")? as u64;
        Ok(StorageRef {
            dtype,
            key: InternedStr(Rc::clone(key)),
            numel,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Runs `input` with a budget no test pickle comes near.
    fn run(input: &[u8], what: &str) -> Result<Pickle> {
        super::run(input, what, &mut Budget::new(what, 1 << 20))
    }

    fn run_ok(input: &[u8]) -> Pickle {
        match run(input, "t.pth") {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn builds_a_dict_with_memo_and_setitems() {
        // {'a': 1, 'b': [None, True]} with memo and protocol 2 framing.
        let input =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(N\x88euh\x01\x88a0.";
        let p = run_ok(input);
        let Object::Dict(d) = &p.objects[p.root] else {
            panic!("not a dict")
        };
        assert_eq!(size_of::<Object>(), 32);
        assert_eq!(d.entries.len(), 2);
        let Object::List(list) = &p.objects[d.entries[1].1] else {
            panic!("not a list")
        };
        // The list was appended to through its memo copy as well.
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn integers_decode_with_sign() {
        // LONG1 of -2 (0xfe), BININT -5, BININT2 65535 in a tuple.
        let input = b"(\x8a\x01\xfeJ\xfb\xff\xff\xffM\xff\xfft.";
        let p = run_ok(input);
        let Object::Tuple(items) = &p.objects[p.root] else {
            panic!("not a tuple")
        };
        let values: Vec<i64> = items
            .iter()
            .map(|&i| match p.objects[i] {
                Object::Int(v) => v,
                _ => panic!("not an int"),
            })
            .collect();
        assert_eq!(values, [-2, -5, 65535]);
    }

    #[test]
    fn a_forbidden_global_is_named() {
        let input = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let err = run(input, "evil.pth").err().unwrap().to_string();
        assert!(err.contains("posix.system"), "{err}");
        assert!(err.contains("evil.pth"), "{err}");
    }

    #[test]
    fn stack_global_is_checked_too() {
        let input = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        let err = run(input, "f").err().unwrap().to_string();
        assert!(err.contains("builtins.eval"), "{err}");
    }

    #[test]
    fn truncated_input_is_an_error() {
        for input in [
            &b"\x80\x02X\xff\x00\x00\x00ab"[..],
            b"\x80\x02}",
            b"",
            b"\x80",
        ] {
            let err = run(input, "f").err().unwrap().to_string();
            assert!(err.contains("f"), "{err}");
        }
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        let input = b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.";
        let err = run(input, "f").err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn unsupported_opcodes_are_reported() {
        let err = run(b"I01\n.", "f").err().unwrap().to_string();
        assert!(err.contains("0x49"), "{err}");
    }

    #[test]
    fn popping_past_a_mark_is_an_error() {
        assert!(run(b"N(\x85.", "f").is_err());
        assert!(run(b"N(0.", "f").is_err());
    }

    #[test]
    fn a_memoized_object_is_shared_not_copied() {
        // d = {}; (d, d, d)
        let p = run_ok(b"}q\x00(h\x00h\x00h\x00t.");
        let Object::Tuple(items) = &p.objects[p.root] else {
            panic!("not a tuple")
        };
        assert_eq!(items, &[0, 0, 0]);
        assert_eq!(p.objects.len(), 2);
    }

    #[test]
    fn equal_text_keys_are_one_key() {
        // {'key': 1, 'key': 2}, the keys two separate string objects.
        let p = run_ok(b"}(X\x03\x00\x00\x00keyK\x01X\x03\x00\x00\x00keyK\x02u.");
        let Object::Dict(d) = &p.objects[p.root] else {
            panic!("not a dict")
        };
        assert_eq!(d.entries.len(), 1);
        assert!(matches!(p.objects[d.entries[0].1], Object::Int(2)));
        let [(key, _)] = d.entries[..] else {
            panic!("one entry")
        };
        let Object::Str(text) = &p.objects[key] else {
            panic!("not a str")
        };
        assert_eq!(&**text, "key");
    }

    #[test]
    fn building_is_charged_to_the_budget() {
        // (d, d, ...) with a thousand memo fetches: small objects, but each
        // costs a stack slot and a tuple item.
        let mut input = b"}q\x00(".to_vec();
        for _ in 0..1000 {
            input.extend_from_slice(b"h\x00");
        }
        input.extend_from_slice(b"t.");
        let mut budget = Budget::new("f.pth", 4096);
        let err = super::run(&input, "f.pth", &mut budget).err().unwrap();
        assert!(
            matches!(&err, Error::TooMuchData { item, allowed: 4096, .. }
                if item.starts_with("unpickling data.pkl (at byte ")),
            "{err}"
        );
        let mut budget = Budget::new("f.pth", 1 << 20);
        super::run(&input, "f.pth", &mut budget).unwrap();
        assert!(budget.used() > 16_000, "{}", budget.used());
    }

    #[test]
    fn self_referencing_structures_are_fine() {
        // d = {}; d['d'] = d
        let p = run_ok(b"}q\x00X\x01\x00\x00\x00dh\x00s.");
        let Object::Dict(d) = &p.objects[p.root] else {
            panic!("not a dict")
        };
        assert_eq!(d.entries[0].1, p.root);
    }
}
