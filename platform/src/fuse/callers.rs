//! Which callers look at the attributes of the files they list.
//!
//! Every entry a READDIRPLUS reply carries attributes for is linked by the kernel as if looked
//! up, and held until the kernel forgets it; a daemon that keeps its memory bounded must then
//! ask the kernel to drop what it holds. A `find` over a million files through a mount spent
//! most of its time on exactly that (linking a million entries it never stats, then
//! dropping them), while `ls -l`, `du`, `cp -a`, `rsync` and file managers want every file's
//! attributes and would otherwise send one LOOKUP per file.
//!
//! So the adapter learns per calling thread (FUSE names the thread behind each request): a
//! caller not yet known gets a folder's files as plain names; once it is seen to look up
//! most of the files it was given that way, its listings carry attributes. A name-only walk
//! never pays for attributes; a statting one pays one LOOKUP per file of its first folder or
//! so, then none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds the table: callers idle this long are dropped first.
const IDLE: Duration = Duration::from_secs(30);
const MAX_CALLERS: usize = 1024;
/// Counts are halved past this, so a caller that changes its ways is followed within a few
/// thousand files.
const WINDOW: u32 = 4096;

#[derive(Clone, Copy)]
struct Caller {
    /// Files given without attributes.
    bare: u32,
    /// Files looked up (most of them ones given bare; a path typed by hand counts too).
    looked_up: u32,
    last: Instant,
}

#[derive(Default)]
pub(super) struct Callers {
    by_id: Mutex<HashMap<u32, Caller>>,
}

impl Callers {
    fn with(&self, id: u32, f: impl FnOnce(&mut Caller)) {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CALLERS && !map.contains_key(&id) {
            map.retain(|_, c| now.duration_since(c.last) < IDLE);
            if map.len() >= MAX_CALLERS {
                map.clear();
            }
        }
        let c = map.entry(id).or_insert(Caller {
            bare: 0,
            looked_up: 0,
            last: now,
        });
        c.last = now;
        f(c);
        if c.bare > WINDOW || c.looked_up > WINDOW {
            c.bare /= 2;
            c.looked_up /= 2;
        }
    }

    /// Whether listings for caller `id` should carry every file's attributes: it looked up
    /// at least half of the files it was given as names. Unknown callers get names, so that
    /// what they do with them can be seen.
    pub fn wants_attributes(&self, id: u32) -> bool {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id)
            .is_some_and(|c| c.bare > 0 && c.looked_up.saturating_mul(2) >= c.bare)
    }

    /// Caller `id` was given `n` files without attributes.
    pub fn gave_bare(&self, id: u32, n: u32) {
        if n > 0 {
            self.with(id, |c| c.bare = c.bare.saturating_add(n));
        }
    }

    /// Caller `id` looked up a file (not a folder: walkers that never stat still open the
    /// folders they descend into).
    pub fn looked_up_file(&self, id: u32) {
        self.with(id, |c| c.looked_up = c.looked_up.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_given_attributes_once_it_looks_up_what_it_was_given_bare() {
        let c = Callers::default();
        assert!(!c.wants_attributes(7), "unknown callers get names first");
        c.gave_bare(7, 100);
        for _ in 0..49 {
            c.looked_up_file(7);
        }
        assert!(!c.wants_attributes(7), "49 of 100 looked up");
        c.looked_up_file(7);
        assert!(c.wants_attributes(7), "50 of 100 looked up");
        assert!(!c.wants_attributes(8), "callers are told apart");
    }

    #[test]
    fn a_name_only_walker_stays_bare_and_a_changed_caller_is_followed() {
        let c = Callers::default();
        for _ in 0..1000 {
            c.gave_bare(1, 95);
        }
        assert!(!c.wants_attributes(1));
        // The same thread now stats everything it is given: within a window it is followed.
        for _ in 0..40 {
            c.gave_bare(1, 95);
            for _ in 0..95 {
                c.looked_up_file(1);
            }
        }
        assert!(c.wants_attributes(1));
    }

    #[test]
    fn the_table_stays_bounded() {
        let c = Callers::default();
        for id in 0..(3 * MAX_CALLERS as u32) {
            c.gave_bare(id, 1);
        }
        assert!(c.by_id.lock().unwrap().len() <= MAX_CALLERS);
    }
}
