//! Listings of the folders a walk is about to enter, computed ahead on a thread of their own.
//!
//! A walker (`find`, `cp -r`, a file manager opening folders, a WebDAV client) waits for each
//! folder's listing before it asks for the next one, so the daemon's queries sit on its
//! critical path while the machine's other core idles: on a million-file snapshot, reading
//! the index was half of the daemon's time. So once a folder of a snapshot or of the history
//! has been listed for a request, its subfolders are queued, the newest first (a depth-first
//! walk enters the first subfolder next), and one thread lists them ahead.
//!
//! Bounded: at most [`QUEUE`] folders wait (the oldest wishes go first), the thread starts
//! no listing while [`READY_ENTRIES`] entries are kept, and a kept listing nobody took within
//! [`AGE`] is dropped. A kept listing serves only a request that took the same state
//! (`Arc<S>`, compared by pointer) it was computed from, and a listing is taken once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) const QUEUE: usize = 256;
pub(crate) const READY_ENTRIES: usize = 32_768;
pub(crate) const AGE: Duration = Duration::from_secs(10);

struct Ready<S, T> {
    state: Arc<S>,
    listing: T,
    entries: usize,
    at: Instant,
}

struct Inner<K, S, T> {
    /// Folders to list, the next one at the back.
    queue: VecDeque<(Arc<S>, K)>,
    /// The folders being listed now (one per thread).
    running: Vec<(Arc<S>, K)>,
    ready: HashMap<K, Ready<S, T>>,
    ready_entries: usize,
    stopped: bool,
}

pub(crate) struct Prefetch<K, S, T> {
    inner: Mutex<Inner<K, S, T>>,
    /// The thread waits here for work.
    wake: Condvar,
    /// Requests wait here for the listing being computed.
    done: Condvar,
    /// Listings computed ahead that a request used.
    used: AtomicU64,
}

impl<K: Clone + Eq + Hash, S, T> Prefetch<K, S, T> {
    pub fn new() -> Self {
        Prefetch {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                running: Vec::new(),
                ready: HashMap::new(),
                ready_entries: 0,
                stopped: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            used: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, S, T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for `folders` (in the order a walk enters them) to be listed ahead under `state`.
    pub fn want(&self, state: &Arc<S>, folders: Vec<K>) {
        if folders.is_empty() {
            return;
        }
        let mut g = self.lock();
        if g.stopped {
            return;
        }
        // The first folders of the walk are the next ones it enters.
        let n = folders.len().min(QUEUE);
        for k in folders[..n].iter().rev() {
            if g.ready.contains_key(k) || g.running.iter().any(|(_, r)| r == k) {
                continue;
            }
            g.queue.push_back((Arc::clone(state), k.clone()));
        }
        let excess = g.queue.len().saturating_sub(QUEUE);
        g.queue.drain(..excess);
        drop(g);
        self.wake.notify_one();
    }

    /// The listing of `folder` computed ahead under `state`, if there is one; waits for it when
    /// it is being computed right now (the request would only compute it a second time).
    pub fn take(&self, state: &Arc<S>, folder: &K) -> Option<T> {
        let mut g = self.lock();
        g.queue.retain(|(_, k)| k != folder);
        while g
            .running
            .iter()
            .any(|(s, k)| k == folder && Arc::ptr_eq(s, state))
        {
            g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        let r = g.ready.remove(folder)?;
        g.ready_entries -= r.entries;
        drop(g);
        // Space for the thread to go on.
        self.wake.notify_one();
        let same = Arc::ptr_eq(&r.state, state);
        if same {
            self.used.fetch_add(1, Ordering::Relaxed);
        }
        same.then_some(r.listing)
    }

    /// How many listings computed ahead a request used.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether nothing is waiting to be listed or being listed.
    #[cfg(test)]
    pub fn idle(&self) -> bool {
        let g = self.lock();
        g.queue.is_empty() && g.running.is_empty()
    }

    /// For the prefetching thread: the next folder to list, waiting for one; `None` once
    /// stopped.
    pub fn next(&self) -> Option<(Arc<S>, K)> {
        let mut g = self.lock();
        loop {
            if g.stopped {
                return None;
            }
            let now = Instant::now();
            let before = g.ready.len();
            let mut freed = 0;
            g.ready.retain(|_, r| {
                let keep = now.duration_since(r.at) < AGE;
                if !keep {
                    freed += r.entries;
                }
                keep
            });
            g.ready_entries -= freed;
            let expired = before != g.ready.len();
            if g.ready_entries < READY_ENTRIES {
                if let Some(job) = g.queue.pop_back() {
                    g.running.push(job.clone());
                    return Some(job);
                }
            }
            // Woken by a wish, a taken listing or `stop`; the timeout lets kept listings age.
            let wait = if expired || !g.ready.is_empty() {
                AGE / 4
            } else {
                AGE * 6
            };
            g = self
                .wake
                .wait_timeout(g, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// For a prefetching thread: the listing of `folder`, which [`Prefetch::next`] gave it
    /// (`None` when listing it failed: the request will meet the error itself).
    pub fn finish(&self, folder: &K, listing: Option<(T, usize)>) {
        let mut g = self.lock();
        let at = g.running.iter().position(|(_, k)| k == folder);
        if let Some((state, k)) = at.map(|i| g.running.swap_remove(i)) {
            if let Some((listing, entries)) = listing {
                if !g.stopped {
                    g.ready_entries += entries;
                    let old = g.ready.insert(
                        k,
                        Ready {
                            state,
                            listing,
                            entries,
                            at: Instant::now(),
                        },
                    );
                    if let Some(old) = old {
                        g.ready_entries -= old.entries;
                    }
                }
            }
        }
        drop(g);
        self.done.notify_all();
    }

    /// Drops every wish and kept listing (the state they were for was replaced).
    pub fn clear(&self) {
        let mut g = self.lock();
        g.queue.clear();
        g.ready.clear();
        g.ready_entries = 0;
    }

    pub fn stop(&self) {
        let mut g = self.lock();
        g.stopped = true;
        g.queue.clear();
        g.ready.clear();
        g.ready_entries = 0;
        drop(g);
        self.wake.notify_all();
        self.done.notify_all();
    }

    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize) {
        let g = self.lock();
        (g.queue.len(), g.ready.len(), g.ready_entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = Prefetch<u32, &'static str, Vec<u32>>;

    fn run_one(p: &P) -> u32 {
        let (_, k) = p.next().unwrap();
        p.finish(&k, Some((vec![k * 10], 1)));
        k
    }

    #[test]
    fn folders_are_listed_newest_wish_first_in_walk_order() {
        let p = P::new();
        let st = Arc::new("state");
        p.want(&st, vec![1, 2, 3]);
        assert_eq!(run_one(&p), 1);
        // The walk entered 1 and found 11, 12: those come before 2 and 3.
        p.want(&st, vec![11, 12]);
        assert_eq!(run_one(&p), 11);
        assert_eq!(run_one(&p), 12);
        assert_eq!(run_one(&p), 2);
        assert_eq!(p.take(&st, &12), Some(vec![120]));
        assert_eq!(p.take(&st, &12), None, "a listing is taken once");
    }

    #[test]
    fn a_listing_serves_only_the_state_it_was_computed_from() {
        let p = P::new();
        let old = Arc::new("old");
        let new = Arc::new("new");
        p.want(&old, vec![1]);
        run_one(&p);
        assert_eq!(p.take(&new, &1), None);
        p.want(&old, vec![2]);
        run_one(&p);
        p.clear();
        assert_eq!(p.take(&old, &2), None, "cleared on reload");
    }

    #[test]
    fn wishes_and_kept_entries_are_bounded() {
        let p = P::new();
        let st = Arc::new("s");
        p.want(&st, (0..(3 * QUEUE as u32)).collect());
        assert_eq!(p.counts().0, QUEUE);
        // The first folders of the walk are kept, the last wishes dropped.
        assert_eq!(run_one(&p), 0);
        // Fill the kept listings past the bound: the thread then waits for a take.
        let (_, k) = p.next().unwrap();
        p.finish(&k, Some((vec![k], READY_ENTRIES)));
        let waiter = {
            let p = Arc::new(p);
            let q = Arc::clone(&p);
            let h = std::thread::spawn(move || q.next().map(|(_, k)| k));
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                !h.is_finished(),
                "no listing started while {READY_ENTRIES} are kept"
            );
            assert_eq!(p.take(&st, &k), Some(vec![k]));
            h.join().unwrap()
        };
        assert_eq!(waiter, Some(2));
    }

    #[test]
    fn a_request_waits_for_the_listing_being_computed() {
        let p = Arc::new(P::new());
        let st = Arc::new("s");
        p.want(&st, vec![7]);
        let (_, k) = p.next().unwrap();
        let q = Arc::clone(&p);
        let s2 = Arc::clone(&st);
        let h = std::thread::spawn(move || q.take(&s2, &7));
        std::thread::sleep(Duration::from_millis(50));
        p.finish(&k, Some((vec![k], 1)));
        assert_eq!(h.join().unwrap(), Some(vec![7]));
    }

    #[test]
    fn stop_ends_the_thread_and_wakes_waiters() {
        let p = Arc::new(P::new());
        let q = Arc::clone(&p);
        let h = std::thread::spawn(move || q.next());
        std::thread::sleep(Duration::from_millis(50));
        p.stop();
        assert!(h.join().unwrap().is_none());
    }
}
