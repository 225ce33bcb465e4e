//! How many control-socket connections each user may hold at once.
//!
//! Root (who alone may change the router) has slots of its own, so local
//! users opening idle connections can never lock root out; other users
//! share a smaller pool, with a cap per uid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Caps on concurrent connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For uid 0.
    pub root: usize,
    /// For every other uid together.
    pub others: usize,
    /// For any one other uid.
    pub per_uid: usize,
}

pub const LIMITS: Limits = Limits {
    root: 64,
    others: 32,
    per_uid: 8,
};

#[derive(Debug, Default)]
struct Counts {
    root: usize,
    others: usize,
    by_uid: HashMap<u32, usize>,
}

/// The connections held now, by uid.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// One connection's slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `uid`, or why not.
    pub fn try_take(self: &Arc<Self>, uid: u32) -> Result<Slot, String> {
        let mut c = self.counts();
        if uid == 0 {
            if c.root >= self.limits.root {
                return Err(format!(
                    "too many control connections from root ({} at once)",
                    self.limits.root
                ));
            }
            c.root += 1;
        } else {
            let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
            if mine >= self.limits.per_uid {
                return Err(format!(
                    "too many control connections from uid {uid} ({} at once)",
                    self.limits.per_uid
                ));
            }
            if c.others >= self.limits.others {
                return Err(format!(
                    "too many control connections from non-root users ({} at once)",
                    self.limits.others
                ));
            }
            c.others += 1;
            c.by_uid.insert(uid, mine + 1);
        }
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }

    /// Connections held now: (root, others).
    pub fn held(&self) -> (usize, usize) {
        let c = self.counts();
        (c.root, c.others)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.counts();
        if self.uid == 0 {
            c.root = c.root.saturating_sub(1);
            return;
        }
        c.others = c.others.saturating_sub(1);
        if let Some(n) = c.by_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        root: 2,
        others: 3,
        per_uid: 2,
    };

    #[test]
    fn other_users_never_take_roots_slots() {
        let s = Slots::new(SMALL);
        let mut held = Vec::new();
        for uid in 1000..1100 {
            if let Ok(slot) = s.try_take(uid) {
                held.push(slot);
            }
        }
        assert_eq!(held.len(), 3);
        let r1 = s.try_take(0).unwrap();
        let _r2 = s.try_take(0).unwrap();
        let e = s.try_take(0).unwrap_err();
        assert!(e.contains("root"), "{e}");
        drop(r1);
        s.try_take(0).unwrap();
    }

    #[test]
    fn one_user_gets_a_share_only() {
        let s = Slots::new(SMALL);
        let a = s.try_take(1000).unwrap();
        let _b = s.try_take(1000).unwrap();
        let e = s.try_take(1000).unwrap_err();
        assert!(e.contains("uid 1000"), "{e}");
        // Another user still gets in, up to the pool.
        let _c = s.try_take(1001).unwrap();
        assert!(s.try_take(1002).unwrap_err().contains("non-root"));
        drop(a);
        assert_eq!(s.held(), (0, 2));
        let _d = s.try_take(1000).unwrap();
    }

    #[test]
    fn slots_come_back_on_drop() {
        let s = Slots::new(SMALL);
        for _ in 0..100 {
            let a = s.try_take(7).unwrap();
            let b = s.try_take(0).unwrap();
            drop((a, b));
        }
        assert_eq!(s.held(), (0, 0));
        assert!(s.counts().by_uid.is_empty());
    }
}
