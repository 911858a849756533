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
//! The walk stops (and leaves the error to `serde_pickle`) at anything it does not understand:
//! an unknown opcode, a truncated argument, a stack underflow.

/// Bytes counted per node (a `serde_pickle::Value` is 32 bytes, plus container overhead).
const NODE_BYTES: u64 = 48;

/// What decoding may build: 256 MiB, or 16 times the pickle's size when that is more (pickled
/// numpy arrays expand to about their own size; a real pickle never comes near this).
pub fn limit_bytes(input_len: usize) -> u64 {
    (256u64 << 20).max(16 * input_len as u64)
}

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

    /// Expanded size of `root` (saturating), iteratively (pickles may nest deeply).
    fn expanded(&self, root: u32) -> u64 {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let n = self.own.len();
        let mut state = vec![NEW; n];
        let mut size = vec![0u64; n];
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
            for &c in kids {
                let s = if state[c as usize] == DONE {
                    size[c as usize]
                } else {
                    // A cycle: serde_pickle replaces the recursive reference by one value.
                    NODE_BYTES
                };
                total = total.saturating_add(s);
            }
            size[id as usize] = total;
            state[id as usize] = DONE;
            stack.pop();
        }
        size[root as usize]
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
            b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                let n = self.line()?.len() as u64;
                self.push_leaf(n);
            }
            b'N' | b'}' | b']' | b')' | 0x88 | 0x89 | 0x8f | 0x97 => self.push_leaf(0),
            b'J' => self.arg_leaf(4)?,
            b'K' => self.arg_leaf(1)?,
            b'M' => self.arg_leaf(2)?,
            b'G' => self.arg_leaf(8)?,
            0x82 => self.arg_leaf(1)?,
            0x83 => self.arg_leaf(2)?,
            0x84 => self.arg_leaf(4)?,
            b'T' | b'X' | b'B' | 0x8b => self.sized_leaf(4)?,
            b'U' | b'C' | 0x8c | 0x8a => self.sized_leaf(1)?,
            0x8d | 0x8e | 0x96 => self.sized_leaf(8)?,
            b'c' => {
                let n = self.line()?.len() + self.line()?.len();
                self.push_leaf(n as u64);
            }
            b'i' => {
                self.line()?;
                self.line()?;
                let items = self.pop_mark()?;
                self.new_from(items);
            }
            0x93 | 0x81 => {
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
            b'e' | b'u' | 0x90 => {
                let items = self.pop_mark()?;
                self.add_to_top(items)?;
            }
            b't' | b'l' | b'd' | b'o' | 0x91 => {
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

    fn sized_leaf(&mut self, n: usize) -> Option<()> {
        let len = usize::try_from(self.uint(n)?).ok()?;
        self.take(len)?;
        self.push_leaf(len as u64);
        Some(())
    }
}

/// The bytes decoding `pickle` would build (an estimate that counts every copy `serde_pickle`
/// makes of a referenced value), over every object left on the stack at the end.
pub fn decoded_bytes(pickle: &[u8]) -> u64 {
    let mut w = Walk {
        b: pickle,
        pos: 0,
        g: Graph::default(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
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
    roots
        .into_iter()
        .fold(0u64, |acc, r| acc.saturating_add(w.g.expanded(r)))
}

/// An error when decoding `pickle` would build more than [`limit_bytes`].
pub fn check(pickle: &[u8]) -> Result<(), String> {
    let need = decoded_bytes(pickle);
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

    #[test]
    fn a_cycle_and_truncation_end_the_walk() {
        // l = []; memo 0; append l to itself; then a truncated BINUNICODE.
        let p = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'X', 0xff, 0xff];
        assert!(decoded_bytes(&p) <= 3 * NODE_BYTES);
        assert!(check(&[]).is_ok());
    }
}
