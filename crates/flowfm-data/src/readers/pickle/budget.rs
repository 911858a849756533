//! A bound on what decoding a pickle builds, checked before `serde_pickle` runs.
//!
//! `serde_pickle` deep-copies a value every time a pickle refers to it again (memo `GET`s, `DUP`),
//! so a pickle of a few hundred bytes whose memo references nest (`x = [m, m]`, memoise, repeat)
//! expands exponentially: the fuzzer found a 1.8 KB input that exhausted memory. This module
//! walks the opcodes once without building anything: every pushed object gets an id, containers
//! record the ids of what was put into them, and memo references and `DUP` push an existing id.
//! The bytes the decoder would build are then the expanded size of that graph (each object its
//! own bytes plus its children's expanded sizes, shared children counted once per reference, a
//! reference back into an object being expanded counted as one node), computed in linear time.
//!
//! The same pass measures how deeply values nest: `serde_pickle` converts (and drops) values
//! recursively, so a pickle of a few KiB of one-byte `TUPLE1` opcodes (3,351 levels, found by the
//! fuzzer under AddressSanitizer, whose larger frames make it fail first; a deeper one overflows
//! any stack) would abort the process. Past [`MAX_DEPTH`] levels the pickle is refused.
//!
//! Sets are refused: `serde_pickle` builds them with `collect` into a `BTreeSet`, which sorts,
//! and its ordering of mixed numbers (integers against floats, NaN) is not a total order, so the
//! standard library's sort panics on some sets of a few numbers (found by the fuzzer). No pickle
//! our decoders read holds a set.
//!
//! The walk stops (and leaves the error to `serde_pickle`) at anything it does not understand:
//! an unknown opcode, a truncated argument, a stack underflow.

/// Bytes counted per node (a `serde_pickle::Value` is 32 bytes, plus container overhead).
const NODE_BYTES: u64 = 48;

/// What decoding may build: 256 MiB, or 16 times the pickle's size when that is more (pickled
/// numpy arrays expand to about their own size; a real pickle never comes near this).
pub fn limit_bytes(input_len: usize) -> u64 {
    (256u64 << 20).max(16 * input_len as u64)
}

/// The message for a pickle that builds a set.
const SETS: &str = "sets and frozensets are not supported (the decoder's ordering of mixed \
                    numbers in a set is not total and can panic)";

/// Deepest nesting decoded: far beyond any real pickle of arrays (the UCI HAPT pickle nests a
/// handful of levels), far below what `serde_pickle`'s recursion needs of a 2 MiB thread stack.
pub const MAX_DEPTH: u64 = 256;

/// The object graph the opcodes describe.
#[derive(Default)]
struct Graph {
    /// Own bytes of each object.
    own: Vec<u64>,
    /// Children of each object (ids; references repeat).
    children: Vec<Vec<u32>>,
}

impl Graph {
    fn new_obj(&mut self, own: u64, children: Vec<u32>) -> u32 {
        self.own.push(own);
        self.children.push(children);
        (self.own.len() - 1) as u32
    }

    /// Expanded size of `root` (saturating) and its nesting depth (a leaf is 1), iteratively
    /// (pickles may nest deeply).
    fn expanded(&self, root: u32) -> (u64, u64) {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let n = self.own.len();
        let mut state = vec![NEW; n];
        let mut size = vec![0u64; n];
        let mut depth = vec![0u64; n];
        let mut stack: Vec<(u32, usize)> = vec![(root, 0)];
        state[root as usize] = OPEN;
        while let Some(&(id, next)) = stack.last() {
            let kids = &self.children[id as usize];
            if let Some(&c) = kids.get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                if state[c as usize] == NEW {
                    state[c as usize] = OPEN;
                    stack.push((c, 0));
                }
                continue;
            }
            let mut total = self.own[id as usize];
            let mut deepest = 0;
            for &c in kids {
                let (s, d) = if state[c as usize] == DONE {
                    (size[c as usize], depth[c as usize])
                } else {
                    // A cycle: serde_pickle replaces the recursive reference by one value.
                    (NODE_BYTES, 1)
                };
                total = total.saturating_add(s);
                deepest = deepest.max(d);
            }
            size[id as usize] = total;
            depth[id as usize] = deepest + 1;
            state[id as usize] = DONE;
            stack.pop();
        }
        (size[root as usize], depth[root as usize])
    }
}

/// One entry of the walk's stack.
#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Mark,
    Obj(u32),
}

struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
    g: Graph,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, u32>,
    /// The bytes of string objects (what `STACK_GLOBAL` names a global with); `None` for a
    /// protocol-0 unicode line with escapes, whose value the walk does not decode.
    strings: std::collections::HashMap<u32, Option<Vec<u8>>>,
    /// Why the pickle is refused, when the walk met something it must not decode.
    refused: Option<&'static str>,
}

/// Is `module.name` Python's `set` or `frozenset`?
fn is_set_global(module: &[u8], name: &[u8]) -> bool {
    matches!(module, b"builtins" | b"__builtin__") && matches!(name, b"set" | b"frozenset")
}

impl Walk<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        let s = self.take(n)?;
        let mut v = 0u64;
        for (i, &byte) in s.iter().enumerate() {
            v |= u64::from(byte) << (8 * i);
        }
        Some(v)
    }

    fn line(&mut self) -> Option<&[u8]> {
        let rest = self.b.get(self.pos..)?;
        let n = rest.iter().position(|&c| c == b'\n')?;
        self.take(n + 1)
    }

    fn push_leaf(&mut self, bytes: u64) {
        let id = self.g.new_obj(NODE_BYTES.saturating_add(bytes), Vec::new());
        self.stack.push(Slot::Obj(id));
    }

    /// Stops the walk, refusing the pickle.
    fn refuse(&mut self, why: &'static str) -> Option<()> {
        self.refused = Some(why);
        None
    }

    fn pop(&mut self) -> Option<u32> {
        match self.stack.pop()? {
            Slot::Obj(id) => Some(id),
            Slot::Mark => None,
        }
    }

    fn top(&self) -> Option<u32> {
        match self.stack.last()? {
            Slot::Obj(id) => Some(*id),
            Slot::Mark => None,
        }
    }

    /// Pops everything down to the last mark (and the mark).
    fn pop_mark(&mut self) -> Option<Vec<u32>> {
        let m = self.stack.iter().rposition(|s| *s == Slot::Mark)?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|s| match s {
                Slot::Obj(id) => Some(id),
                Slot::Mark => None,
            })
            .collect()
    }

    fn new_from(&mut self, children: Vec<u32>) {
        let id = self.g.new_obj(NODE_BYTES, children);
        self.stack.push(Slot::Obj(id));
    }

    fn add_to_top(&mut self, children: Vec<u32>) -> Option<()> {
        let t = self.top()?;
        self.g.children[t as usize].extend(children);
        Some(())
    }

    fn get(&mut self, key: u64) {
        match self.memo.get(&key) {
            Some(&id) => self.stack.push(Slot::Obj(id)),
            None => self.push_leaf(0),
        }
    }

    /// One opcode; `None` stops the walk (end, or something `serde_pickle` will report).
    fn step(&mut self) -> Option<()> {
        let op = *self.take(1)?.first()?;
        match op {
            b'.' => return None,
            b'(' => self.stack.push(Slot::Mark),
            b'0' => {
                self.stack.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let t = self.top()?;
                self.stack.push(Slot::Obj(t));
            }
            b'F' | b'I' | b'L' | b'S' | b'P' => {
                let n = self.line()?.len() as u64;
                self.push_leaf(n);
            }
            b'V' => {
                let line = self.line()?;
                let text = line.strip_suffix(b"\n").unwrap_or(line);
                let value = (!text.contains(&b'\\')).then(|| text.to_vec());
                let n = line.len() as u64;
                self.push_leaf(n);
                if let Some(id) = self.top() {
                    self.strings.insert(id, value);
                }
            }
            // EMPTY_SET, ADDITEMS, FROZENSET.
            0x8f..=0x91 => return self.refuse(SETS),
            b'N' | b'}' | b']' | b')' | 0x88 | 0x89 | 0x97 => self.push_leaf(0),
            b'J' => self.arg_leaf(4)?,
            b'K' => self.arg_leaf(1)?,
            b'M' => self.arg_leaf(2)?,
            b'G' => self.arg_leaf(8)?,
            0x82 => self.arg_leaf(1)?,
            0x83 => self.arg_leaf(2)?,
            0x84 => self.arg_leaf(4)?,
            b'T' | b'B' | 0x8b => self.sized_leaf(4, false)?,
            b'X' => self.sized_leaf(4, true)?,
            b'U' | b'C' | 0x8a => self.sized_leaf(1, false)?,
            0x8c => self.sized_leaf(1, true)?,
            0x8d => self.sized_leaf(8, true)?,
            0x8e | 0x96 => self.sized_leaf(8, false)?,
            b'c' => {
                let module = self.line()?.to_vec();
                let name = self.line()?;
                let n = module.len() + name.len();
                let trim = |l: &[u8]| l.strip_suffix(b"\n").unwrap_or(l).to_vec();
                if is_set_global(&trim(&module), &trim(name)) {
                    return self.refuse(SETS);
                }
                self.push_leaf(n as u64);
            }
            b'i' => {
                self.line()?;
                self.line()?;
                let items = self.pop_mark()?;
                self.new_from(items);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.strings.get(&module), self.strings.get(&name)) {
                    (Some(Some(m)), Some(Some(n))) if is_set_global(m, n) => {
                        return self.refuse(SETS)
                    }
                    // A name the walk cannot read (an escaped unicode line) might be `set`.
                    (Some(None), _) | (_, Some(None)) => return self.refuse(SETS),
                    _ => {}
                }
                self.new_from(vec![module, name]);
            }
            0x81 => {
                let a = self.pop()?;
                let b = self.pop()?;
                self.new_from(vec![b, a]);
            }
            0x92 => {
                let a = self.pop()?;
                let b = self.pop()?;
                let c = self.pop()?;
                self.new_from(vec![c, b, a]);
            }
            b'Q' | 0x98 => {
                let a = self.pop()?;
                self.new_from(vec![a]);
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                self.new_from(vec![f, args]);
            }
            b'a' | b'b' => {
                let v = self.pop()?;
                self.add_to_top(vec![v])?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.add_to_top(vec![k, v])?;
            }
            b'e' | b'u' => {
                let items = self.pop_mark()?;
                self.add_to_top(items)?;
            }
            b't' | b'l' | b'd' | b'o' => {
                let items = self.pop_mark()?;
                self.new_from(items);
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.new_from(items);
            }
            b'g' => {
                let line = self.line()?;
                let key = std::str::from_utf8(line).ok()?.trim().parse().ok()?;
                self.get(key);
            }
            b'h' => {
                let k = self.uint(1)?;
                self.get(k);
            }
            b'j' => {
                let k = self.uint(4)?;
                self.get(k);
            }
            b'p' => {
                let line = self.line()?;
                let key = std::str::from_utf8(line).ok()?.trim().parse().ok()?;
                let t = self.top()?;
                self.memo.insert(key, t);
            }
            b'q' | b'r' => {
                let k = self.uint(if op == b'q' { 1 } else { 4 })?;
                let t = self.top()?;
                self.memo.insert(k, t);
            }
            0x94 => {
                let t = self.top()?;
                let k = self.memo.len() as u64;
                self.memo.insert(k, t);
            }
            0x80 => {
                self.take(1)?;
            }
            0x95 => {
                self.take(8)?;
            }
            _ => return None,
        }
        Some(())
    }

    fn arg_leaf(&mut self, n: usize) -> Option<()> {
        self.take(n)?;
        self.push_leaf(0);
        Some(())
    }

    /// A length-prefixed argument; `text`: a unicode string, whose bytes are kept.
    fn sized_leaf(&mut self, n: usize, text: bool) -> Option<()> {
        let len = usize::try_from(self.uint(n)?).ok()?;
        let value = self.take(len)?.to_vec();
        self.push_leaf(len as u64);
        if text {
            if let Some(id) = self.top() {
                self.strings.insert(id, Some(value));
            }
        }
        Some(())
    }
}

/// The bytes decoding `pickle` would build (an estimate that counts every copy `serde_pickle`
/// makes of a referenced value), over every object left on the stack at the end.
pub fn decoded_bytes(pickle: &[u8]) -> u64 {
    decoded(pickle).bytes
}

/// What the walk found: the bytes decoding would build, the deepest nesting, and a reason to
/// refuse the pickle outright.
struct Decoded {
    bytes: u64,
    depth: u64,
    refused: Option<&'static str>,
}

/// Walks `pickle`'s opcodes once (see the module documentation).
fn decoded(pickle: &[u8]) -> Decoded {
    let mut w = Walk {
        b: pickle,
        pos: 0,
        g: Graph::default(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
        strings: std::collections::HashMap::new(),
        refused: None,
    };
    while w.step().is_some() {}
    let roots: Vec<u32> = w
        .stack
        .iter()
        .filter_map(|s| match s {
            Slot::Obj(id) => Some(*id),
            Slot::Mark => None,
        })
        .collect();
    let (bytes, depth) = roots.into_iter().fold((0u64, 0u64), |(bytes, depth), r| {
        let (b, d) = w.g.expanded(r);
        (bytes.saturating_add(b), depth.max(d))
    });
    Decoded {
        bytes,
        depth,
        refused: w.refused,
    }
}

/// An error when decoding `pickle` would build a set, more than [`limit_bytes`], or values
/// nested deeper than [`MAX_DEPTH`].
pub fn check(pickle: &[u8]) -> Result<(), String> {
    let Decoded {
        bytes: need,
        depth,
        refused,
    } = decoded(pickle);
    if let Some(why) = refused {
        return Err(format!("pickle: {why}; refusing it"));
    }
    if depth > MAX_DEPTH {
        return Err(format!(
            "pickle: values nest {depth} levels deep, more than the {MAX_DEPTH} this decoder \
             accepts (decoding recurses once per level); refusing it"
        ));
    }
    let limit = limit_bytes(pickle.len());
    if need > limit {
        return Err(format!(
            "pickle: decoding would build about {} MiB from {} bytes (memo references or DUP \
             copying large values), over the limit of {} MiB; refusing it",
            need >> 20,
            pickle.len(),
            limit >> 20
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x = []; memoise; repeat n: x = [x, x]; memoise` as protocol-2 bytes.
    fn doubling(n: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for i in 0..n {
            let prev = i as u8;
            p.extend([b'h', prev, b'h', prev, 0x86, b'q', prev + 1]);
        }
        p.push(b'.');
        p
    }

    #[test]
    fn memo_doubling_is_counted_exponentially() {
        let small = decoded_bytes(&doubling(4));
        // Every x_i stays on the stack (BINPUT does not pop): trees of 1, 3, 7, 15 and 31 nodes.
        assert_eq!(small, NODE_BYTES * (1 + 3 + 7 + 15 + 31));
        assert!(decoded_bytes(&doubling(60)) > 1 << 50);
        assert!(check(&doubling(10)).is_ok());
        let err = check(&doubling(60)).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn load_pickle_refuses_the_blow_up_before_building_it() {
        // The fuzzer's finding in miniature: 60 doublings would be 2^60 nodes.
        let err = crate::readers::pickle::load_pickle(&doubling(60)).unwrap_err();
        assert!(err.contains("limit") && err.contains("memo"), "{err}");
        assert!(crate::readers::pickle::load_pickle(&doubling(3)).is_ok());
    }

    #[test]
    fn dup_doubling_is_counted_too() {
        // x = (); repeat: DUP, TUPLE2.
        let mut p = vec![0x80, 2, b')'];
        for _ in 0..70 {
            p.extend([b'2', 0x86]);
        }
        p.push(b'.');
        assert!(check(&p).is_err());
    }

    /// `n` nested one-element tuples around an empty dict, as protocol-2 bytes.
    fn nested_tuples(n: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}'];
        p.extend(std::iter::repeat_n(0x85, n));
        p.push(b'.');
        p
    }

    #[test]
    fn nesting_depth_is_measured_and_bounded() {
        assert_eq!(decoded(&nested_tuples(0)).depth, 1);
        assert_eq!(decoded(&nested_tuples(10)).depth, 11);
        // A shared child counts at its own depth under every parent: x = ((),); (x, x).
        let shared = [0x80, 2, b')', 0x85, b'2', 0x86, b'.'];
        assert_eq!(decoded(&shared).depth, 3);
        assert!(check(&nested_tuples(MAX_DEPTH as usize - 1)).is_ok());
        let err = check(&nested_tuples(MAX_DEPTH as usize)).unwrap_err();
        assert!(err.contains("257 levels"), "{err}");
    }

    #[test]
    fn load_pickle_refuses_deep_nesting_before_recursing() {
        // The fuzzer's input was 3,351 levels; a million would overflow any thread's stack.
        for n in [3_351, 1_000_000] {
            let err = crate::readers::pickle::load_pickle(&nested_tuples(n)).unwrap_err();
            assert!(err.contains("levels deep"), "{err}");
        }
        assert!(crate::readers::pickle::load_pickle(&nested_tuples(20)).is_ok());
    }

    #[test]
    fn sets_are_refused_however_they_are_built() {
        // The fuzzer's input in spirit: a frozenset of numbers whose ordering is not total.
        let frozenset = [
            0x80, 4, b'(', b'K', 1, b'G', 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x91, b'.',
        ];
        let empty_set = [0x80, 4, 0x8f, b'.'];
        let global = b"c__builtin__\nset\n(]tR.".to_vec();
        let mut stack_global = vec![0x80, 4, 0x8c, 8];
        stack_global.extend(b"builtins");
        stack_global.extend([0x8c, 9]);
        stack_global.extend(b"frozenset");
        stack_global.extend([0x93, b'.']);
        for p in [&frozenset[..], &empty_set, &global, &stack_global] {
            let err = crate::readers::pickle::load_pickle(p).unwrap_err();
            assert!(err.contains("sets and frozensets"), "{err}");
        }
        // Other globals by STACK_GLOBAL stay fine for the walk.
        let mut other = vec![0x80, 4, 0x8c, 8];
        other.extend(b"builtins");
        other.extend([0x8c, 4]);
        other.extend(b"list");
        other.extend([0x93, b'.']);
        assert!(check(&other).is_ok());
    }

    #[test]
    fn a_cycle_and_truncation_end_the_walk() {
        // l = []; memo 0; append l to itself; then a truncated BINUNICODE.
        let p = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'X', 0xff, 0xff];
        assert!(decoded_bytes(&p) <= 3 * NODE_BYTES);
        assert!(check(&[]).is_ok());
    }
}
