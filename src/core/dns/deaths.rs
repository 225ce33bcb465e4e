//! Containers that died lately. Docker's die event and the registration
//! of a container's names race (the container may die while `attach` is
//! still under way): a registration that comes after the death must
//! register nothing, and a start must let the next one through.

use std::collections::BTreeMap;

/// How long a death is remembered (ms): longer than any attach takes.
pub const MEMORY_MS: u64 = 60_000;
/// Deaths remembered at once; the oldest is forgotten first.
pub const MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct Deaths {
    died: BTreeMap<String, u64>,
}

impl Deaths {
    pub fn died(&mut self, id: &str, now_ms: u64) {
        if !self.died.contains_key(id) && self.died.len() >= MAX {
            if let Some(oldest) = self
                .died
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.died.remove(&oldest);
            }
        }
        self.died.insert(id.to_string(), now_ms);
    }

    pub fn started(&mut self, id: &str) {
        self.died.remove(id);
    }

    /// Did `id` die (and not start again) within `MEMORY_MS`?
    pub fn is_dead(&self, id: &str, now_ms: u64) -> bool {
        self.died
            .get(id)
            .is_some_and(|t| now_ms.saturating_sub(*t) < MEMORY_MS)
    }

    pub fn expire(&mut self, now_ms: u64) {
        self.died
            .retain(|_, t| now_ms.saturating_sub(*t) < MEMORY_MS);
    }

    pub fn len(&self) -> usize {
        self.died.len()
    }

    pub fn is_empty(&self) -> bool {
        self.died.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_blocks_registration_until_a_start_or_it_is_old() {
        let mut d = Deaths::default();
        d.died("c1", 1000);
        assert!(d.is_dead("c1", 1001));
        assert!(!d.is_dead("c2", 1001));
        d.started("c1");
        assert!(!d.is_dead("c1", 1002), "restarted");
        d.died("c1", 2000);
        assert!(!d.is_dead("c1", 2000 + MEMORY_MS), "too old to matter");
        d.expire(2000 + MEMORY_MS);
        assert!(d.is_empty());
    }

    #[test]
    fn the_oldest_death_goes_first_when_full() {
        let mut d = Deaths::default();
        for i in 0..MAX as u64 {
            d.died(&format!("c{i}"), i);
        }
        d.died("new", MAX as u64);
        assert_eq!(d.len(), MAX);
        assert!(!d.is_dead("c0", MAX as u64), "the oldest was forgotten");
        assert!(d.is_dead("c1", MAX as u64) && d.is_dead("new", MAX as u64));
    }
}
