//! Inode numbers and the table of the nodes someone holds.
//!
//! A location's number is a keyed 63-bit hash of the location itself, so the same path gets
//! the same number for the whole life of the mount, also after the kernel forgot it and looks
//! it up again, without remembering anything about it meanwhile. The table maps numbers back to
//! locations only for what is held:
//!
//! - with an adapter that reports lookups' ends (FUSE `forget`), an entry lives while the
//!   kernel's lookup count on it is above zero, so the table holds what the kernel holds;
//! - entries nobody counts (a listing's entries, lookups from an adapter without `forget`) are
//!   a cache: kept while used, dropped once they have not been touched for a while and there
//!   are many of them.
//!
//! Collisions: two live locations hashing to the same number (odds about n²/2⁶⁴ for n live
//! entries) are detected on insertion; the later one is given the next free number of its own
//! probe sequence and keeps that number for the rest of the mount (it is pinned; the pins are
//! never dropped, and there is practically never one).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use backup_platform::meta::Xattr;
use backup_platform::rofs::{Ino, ROOT_INO};

use crate::Loc;

const SHARDS: usize = 32;

/// Hashes an inode number for a table keyed by it: the number is already a keyed hash (SipHash
/// over it again was a visible part of a `find`), so it only needs its top bit spread.
#[derive(Clone, Copy, Default)]
pub(crate) struct InoHasher(u64);

impl std::hash::Hasher for InoHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A map keyed by inode numbers.
pub(crate) type InoMap<V> = HashMap<Ino, V, std::hash::BuildHasherDefault<InoHasher>>;

/// What is known of a node's extended attributes, kept with its entry so that `getxattr`
/// (asked for every file by `ls -l`) is answered without a query.
#[derive(Clone, Debug, Default)]
pub(crate) enum XattrCache {
    #[default]
    Unknown,
    Known(Option<Arc<Vec<Xattr>>>),
}

pub(crate) struct Entry {
    pub loc: Loc,
    /// The kernel's lookup count (0: a cache entry nobody holds).
    pub nlookup: u64,
    /// [`Inodes::tick`] at the last use (for pruning and cache eviction).
    pub touched: AtomicU64,
    /// Where the kernel knows it: the parent's number and the name shown there.
    pub parent: Ino,
    pub name: Box<[u8]>,
    pub dir: bool,
    pub xattrs: Mutex<XattrCache>,
}

#[derive(Default)]
struct Pins {
    by_loc: HashMap<Loc, Ino>,
    taken: HashSet<Ino>,
}

/// What [`Inodes::remember`] stores with a number.
pub(crate) struct Remember<'a> {
    pub loc: &'a Loc,
    pub parent: Ino,
    pub name: &'a [u8],
    pub dir: bool,
    pub xattrs: XattrCache,
    /// Count one reference (a lookup the kernel will `forget`).
    pub count: bool,
}

pub(crate) struct Inodes {
    shards: Vec<RwLock<InoMap<Entry>>>,
    keys: std::hash::RandomState,
    pins: Mutex<Pins>,
    any_pin: AtomicBool,
    started: std::time::Instant,
    /// Entries with a lookup count.
    held: AtomicUsize,
    /// Entries without one.
    cached: AtomicUsize,
}

impl Inodes {
    pub fn new() -> Inodes {
        Inodes {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(InoMap::default()))
                .collect(),
            keys: std::hash::RandomState::new(),
            pins: Mutex::new(Pins::default()),
            any_pin: AtomicBool::new(false),
            started: std::time::Instant::now(),
            held: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
        }
    }

    fn shard(&self, ino: Ino) -> &RwLock<InoMap<Entry>> {
        &self.shards[(ino as usize) % SHARDS]
    }

    /// Milliseconds since the table was made: when an entry was last used.
    pub fn tick(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn now(&self) -> u64 {
        self.tick()
    }

    /// The `k`th number of `loc`'s probe sequence: never 0 or the root's.
    fn probe(&self, loc: &Loc, k: u32) -> Ino {
        if matches!(loc, Loc::Root) {
            return ROOT_INO;
        }
        let h = self.keys.hash_one((loc, k)) & 0x7fff_ffff_ffff_ffff;
        if h <= ROOT_INO {
            h + 2
        } else {
            h
        }
    }

    fn pinned(&self, loc: &Loc) -> Option<Ino> {
        if !self.any_pin.load(Ordering::Relaxed) {
            return None;
        }
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_loc
            .get(loc)
            .copied()
    }

    fn pin_taken(&self, ino: Ino) -> bool {
        self.any_pin.load(Ordering::Relaxed)
            && self
                .pins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .taken
                .contains(&ino)
    }

    /// The number `loc` has (or would get), without storing anything.
    pub fn ino_of(&self, loc: &Loc) -> Ino {
        if let Some(i) = self.pinned(loc) {
            return i;
        }
        for k in 0..64 {
            let h = self.probe(loc, k);
            if k == 0 && h == ROOT_INO {
                return h;
            }
            let shard = self.shard(h).read().unwrap_or_else(|p| p.into_inner());
            match shard.get(&h) {
                Some(e) if e.loc != *loc => continue,
                _ if k > 0 && self.pin_taken(h) => continue,
                _ => return h,
            }
        }
        self.probe(loc, 0)
    }

    /// Stores `r.loc` (counting one reference when asked) and returns its number.
    pub fn remember(&self, r: Remember<'_>) -> Ino {
        let now = self.tick();
        if let Some(i) = self.pinned(r.loc) {
            self.store_at(i, &r, now);
            return i;
        }
        let h = self.probe(r.loc, 0);
        {
            let mut shard = self.shard(h).write().unwrap_or_else(|p| p.into_inner());
            match shard.get_mut(&h) {
                Some(e) if e.loc == *r.loc => {
                    self.bump(e, &r, now);
                    return h;
                }
                Some(_) => {}
                None if !self.pin_taken(h) => {
                    shard.insert(h, self.entry(&r, now));
                    return h;
                }
                None => {}
            }
        }
        // A collision: probe for a free number and keep it for this location from now on.
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = pins.by_loc.get(r.loc) {
            drop(pins);
            self.store_at(i, &r, now);
            return i;
        }
        for k in 1..u32::MAX {
            let hk = self.probe(r.loc, k);
            if pins.taken.contains(&hk) {
                continue;
            }
            let mut shard = self.shard(hk).write().unwrap_or_else(|p| p.into_inner());
            let free = match shard.get(&hk) {
                None => true,
                Some(e) => e.loc == *r.loc,
            };
            if !free {
                continue;
            }
            match shard.get_mut(&hk) {
                Some(e) => self.bump(e, &r, now),
                None => {
                    shard.insert(hk, self.entry(&r, now));
                }
            }
            pins.by_loc.insert(r.loc.clone(), hk);
            pins.taken.insert(hk);
            self.any_pin.store(true, Ordering::Relaxed);
            tracing::debug!("inode number collision for {:?}: pinned to {hk}", r.loc);
            return hk;
        }
        h
    }

    fn store_at(&self, i: Ino, r: &Remember<'_>, now: u64) {
        let mut shard = self.shard(i).write().unwrap_or_else(|p| p.into_inner());
        match shard.get_mut(&i) {
            Some(e) => self.bump(e, r, now),
            None => {
                shard.insert(i, self.entry(r, now));
            }
        }
    }

    fn entry(&self, r: &Remember<'_>, now: u64) -> Entry {
        if r.count {
            self.held.fetch_add(1, Ordering::Relaxed);
        } else {
            self.cached.fetch_add(1, Ordering::Relaxed);
        }
        Entry {
            loc: r.loc.clone(),
            nlookup: u64::from(r.count),
            touched: AtomicU64::new(now),
            parent: r.parent,
            name: r.name.into(),
            dir: r.dir,
            xattrs: Mutex::new(r.xattrs.clone()),
        }
    }

    fn bump(&self, e: &mut Entry, r: &Remember<'_>, now: u64) {
        if r.count {
            if e.nlookup == 0 {
                self.cached.fetch_sub(1, Ordering::Relaxed);
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            e.nlookup += 1;
        }
        e.touched.store(now, Ordering::Relaxed);
        if let XattrCache::Known(_) = r.xattrs {
            *e.xattrs.get_mut().unwrap_or_else(|p| p.into_inner()) = r.xattrs.clone();
        }
    }

    /// One more reference to a number already in the table; false when it is not there.
    pub fn hold(&self, ino: Ino) -> bool {
        let now = self.tick();
        let mut shard = self.shard(ino).write().unwrap_or_else(|p| p.into_inner());
        match shard.get_mut(&ino) {
            Some(e) => {
                if e.nlookup == 0 {
                    self.cached.fetch_sub(1, Ordering::Relaxed);
                    self.held.fetch_add(1, Ordering::Relaxed);
                }
                e.nlookup += 1;
                e.touched.store(now, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The kernel dropped `n` references: the entry goes when none is left.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut shard = self.shard(ino).write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = shard.get_mut(&ino) {
            if e.nlookup == 0 {
                return;
            }
            e.nlookup = e.nlookup.saturating_sub(n);
            if e.nlookup == 0 {
                shard.remove(&ino);
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The location of `ino`, if it is in the table.
    pub fn loc(&self, ino: Ino) -> Option<Loc> {
        if ino == ROOT_INO {
            return Some(Loc::Root);
        }
        let shard = self.shard(ino).read().unwrap_or_else(|p| p.into_inner());
        shard.get(&ino).map(|e| {
            e.touched.store(self.now(), Ordering::Relaxed);
            e.loc.clone()
        })
    }

    pub fn xattrs(&self, ino: Ino) -> XattrCache {
        let shard = self.shard(ino).read().unwrap_or_else(|p| p.into_inner());
        shard
            .get(&ino)
            .map(|e| e.xattrs.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    pub fn set_xattrs(&self, ino: Ino, x: XattrCache) {
        let shard = self.shard(ino).read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = shard.get(&ino) {
            *e.xattrs.lock().unwrap_or_else(|p| p.into_inner()) = x;
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn cached(&self) -> usize {
        self.cached.load(Ordering::Relaxed)
    }

    /// Calls `f` with every entry (a walk over what is held, never over the backup).
    pub fn for_each(&self, f: &mut dyn FnMut(Ino, &Entry)) {
        for s in &self.shards {
            let shard = s.read().unwrap_or_else(|p| p.into_inner());
            for (i, e) in shard.iter() {
                f(*i, e);
            }
        }
    }

    /// Forgets every cached xattr answer (after a reload that may have changed them).
    pub fn clear_xattrs(&self) {
        self.for_each(&mut |_, e| {
            *e.xattrs.lock().unwrap_or_else(|p| p.into_inner()) = XattrCache::Unknown;
        });
    }

    /// Drops cache entries (no lookup count) not touched since `before`, oldest first, until
    /// at most `keep` remain.
    pub fn evict_cached(&self, keep: usize, before: u64) {
        if self.cached() <= keep {
            return;
        }
        let mut old: Vec<(u64, Ino)> = Vec::new();
        self.for_each(&mut |i, e| {
            let t = e.touched.load(Ordering::Relaxed);
            if e.nlookup == 0 && t < before {
                old.push((t, i));
            }
        });
        old.sort_unstable();
        let excess = self.cached().saturating_sub(keep).min(old.len());
        for (_, i) in old.into_iter().take(excess) {
            let mut shard = self.shard(i).write().unwrap_or_else(|p| p.into_inner());
            if shard.get(&i).is_some_and(|e| e.nlookup == 0) {
                shard.remove(&i);
                self.cached.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The held folders used longest ago (for the kernel to drop with their contents), at most
    /// `n`, each as (parent, name). The top of the tree is never among them.
    pub fn oldest_dirs(&self, n: usize) -> Vec<(Ino, Box<[u8]>)> {
        let mut dirs: Vec<(u64, Ino, Box<[u8]>)> = Vec::new();
        self.for_each(&mut |_, e| {
            if e.dir && e.nlookup > 0 && !e.loc.is_top() {
                dirs.push((e.touched.load(Ordering::Relaxed), e.parent, e.name.clone()));
            }
        });
        dirs.sort_unstable_by_key(|d| d.0);
        dirs.into_iter()
            .take(n)
            .map(|(_, p, name)| (p, name))
            .collect()
    }
}
