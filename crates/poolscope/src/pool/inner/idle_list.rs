//! `IdleList`: one key's idle HTTP/1 connections, a deque whose newest entry lives inline.
//!
//! A checkout takes the newest idle connection and a return puts one back, so with one idle
//! connection per key — the common steady state — the list never leaves the key's entry in
//! the pool's table: no second allocation is touched on the hot path, which is what keeps
//! checkout cost flat when the table has many keys. Older connections sit in a `VecDeque`.
//!
//! This module orders entries and nothing else; which connection goes where is decided in
//! `idle.rs` and `mod.rs`.

use std::collections::VecDeque;

use super::Idle;

/// Idle connections, oldest first, newest kept inline (first, see `Host`'s layout).
#[repr(C)]
pub(super) struct IdleList<T> {
    /// The most recently returned connection: the next one a checkout takes.
    newest: Option<Idle<T>>,
    /// The older ones, oldest first.
    ///
    /// Invariant: empty whenever `newest` is `None`.
    older: VecDeque<Idle<T>>,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        IdleList {
            newest: None,
            older: VecDeque::new(),
        }
    }
}

impl<T> IdleList<T> {
    pub(super) fn len(&self) -> usize {
        usize::from(self.newest.is_some()) + self.older.len()
    }

    /// Adds the newest entry.
    pub(super) fn push_back(&mut self, idle: Idle<T>) {
        if let Some(prev) = self.newest.replace(idle) {
            self.older.push_back(prev);
        }
    }

    /// Takes the newest entry.
    pub(super) fn pop_back(&mut self) -> Option<Idle<T>> {
        let newest = self.newest.take()?;
        self.newest = self.older.pop_back();
        Some(newest)
    }

    /// The oldest entry.
    pub(super) fn front(&self) -> Option<&Idle<T>> {
        self.older.front().or(self.newest.as_ref())
    }

    /// Takes the oldest entry.
    pub(super) fn pop_front(&mut self) -> Option<Idle<T>> {
        self.older.pop_front().or_else(|| self.newest.take())
    }

    /// Whether the entry with sequence number `seq` is here (entries are in `seq` order).
    pub(super) fn contains_seq(&self, seq: u64) -> bool {
        self.newest.as_ref().is_some_and(|i| i.seq == seq)
            || self.older.binary_search_by_key(&seq, |i| i.seq).is_ok()
    }

    /// Every entry, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Idle<T>> {
        self.older.iter().chain(self.newest.as_ref())
    }

    /// Keeps the entries `keep` says `Ok` to, in order; hands each other one to `removed`
    /// with `keep`'s `Err` value. Entries that stay are not moved.
    pub(super) fn retain<R>(
        &mut self,
        mut keep: impl FnMut(&Idle<T>) -> Result<(), R>,
        mut removed: impl FnMut(Idle<T>, R),
    ) {
        if self.older.iter().any(|i| keep(i).is_err()) {
            let older = std::mem::take(&mut self.older);
            for idle in older {
                match keep(&idle) {
                    Ok(()) => self.older.push_back(idle),
                    Err(r) => removed(idle, r),
                }
            }
        }
        if let Some(r) = self.newest.as_ref().and_then(|i| keep(i).err()) {
            if let Some(idle) = self.newest.take() {
                removed(idle, r);
            }
            self.newest = self.older.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::conn::ConnMeta;
    use crate::pool::ConnId;
    use tokio::time::Instant;

    fn idle(seq: u64) -> Idle<u64> {
        let now = Instant::now();
        Idle {
            conn: seq,
            meta: ConnMeta {
                id: ConnId(seq),
                created: now,
                requests: 0,
            },
            seq,
            since: now,
        }
    }

    fn seqs(l: &IdleList<u64>) -> Vec<u64> {
        l.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn behaves_as_a_deque_oldest_first() {
        let mut l = IdleList::default();
        assert!(l.pop_back().is_none() && l.pop_front().is_none() && l.front().is_none());
        for s in 1..=4 {
            l.push_back(idle(s));
        }
        assert_eq!(seqs(&l), [1, 2, 3, 4]);
        assert_eq!(l.len(), 4);
        assert_eq!(l.front().map(|i| i.seq), Some(1));
        assert!(l.contains_seq(4) && l.contains_seq(2) && !l.contains_seq(5));
        assert_eq!(l.pop_back().map(|i| i.seq), Some(4));
        assert_eq!(l.pop_front().map(|i| i.seq), Some(1));
        assert_eq!(seqs(&l), [2, 3]);
        assert_eq!(l.pop_back().map(|i| i.seq), Some(3));
        assert_eq!(l.pop_back().map(|i| i.seq), Some(2));
        assert_eq!(l.len(), 0);
        l.push_back(idle(5));
        assert_eq!(l.pop_front().map(|i| i.seq), Some(5));
        assert!(l.front().is_none());
    }

    #[test]
    fn retain_removes_what_it_is_told_and_keeps_the_order() {
        let mut l = IdleList::default();
        for s in [7, 8, 9, 10] {
            l.push_back(idle(s));
        }
        let mut gone = Vec::new();
        l.retain(
            |i| if i.seq % 2 == 0 { Err(i.seq) } else { Ok(()) },
            |i, r| gone.push((i.seq, r)),
        );
        assert_eq!(seqs(&l), [7, 9]);
        assert_eq!(gone, [(8, 8), (10, 10)]);
        // The newest removed: the next one becomes the newest.
        assert_eq!(l.pop_back().map(|i| i.seq), Some(9));
        l.retain(|_| Err(()), |_, _| {});
        assert_eq!(l.len(), 0);
        assert!(l.front().is_none());
    }
}
