//! `--ipalloc-init consensus`: the peers agree on who shares the first ring,
//! by single-decree Paxos carried in gossip (as Weave did). Every peer is an
//! acceptor and publishes one entry, its claims; a peer that needs an
//! address also proposes. The chosen value is the set of peers that promised
//! the winning proposal, and every peer that sees the decision seeds the
//! same ring from it.
//!
//! Only a peer changes its own entry, and only upwards: its promise never
//! decreases and it accepts only what it promised, so (promise, accepted)
//! orders one peer's history, and the merge keeps the greater per peer.

use std::collections::BTreeMap;

use crate::core::PeerName;

/// Peers that take part in one consensus; more are dropped.
pub const MAX_NODES: usize = 128;

/// A proposal number; round 0 means none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proposal {
    pub round: u64,
    pub proposer: PeerName,
}

impl Default for Proposal {
    fn default() -> Proposal {
        Proposal {
            round: 0,
            proposer: PeerName::NONE,
        }
    }
}

impl Proposal {
    pub fn is_none(&self) -> bool {
        self.round == 0
    }
}

/// One acceptor's state, as gossiped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub promise: Proposal,
    pub accepted: Proposal,
    /// The value accepted with `accepted`: the peers of the first ring.
    pub value: Vec<PeerName>,
}

impl Claims {
    fn order(&self) -> (Proposal, Proposal) {
        (self.promise, self.accepted)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paxos {
    nodes: BTreeMap<PeerName, Claims>,
}

impl Paxos {
    pub fn new() -> Paxos {
        Paxos::default()
    }

    pub fn nodes(&self) -> &BTreeMap<PeerName, Claims> {
        &self.nodes
    }

    /// Adds one peer's claims as read from the wire (values longer than
    /// `MAX_NODES` are cut; peers beyond `MAX_NODES` are ignored).
    pub fn insert(&mut self, peer: PeerName, mut claims: Claims) -> bool {
        claims.value.truncate(MAX_NODES);
        let room = self.nodes.len() < MAX_NODES;
        match self.nodes.get_mut(&peer) {
            Some(ours) if claims.order() > ours.order() => {
                *ours = claims;
                true
            }
            Some(_) => false,
            None if room => {
                self.nodes.insert(peer, claims);
                true
            }
            None => false,
        }
    }

    /// Per peer, the greater claims win; true if anything changed.
    pub fn merge(&mut self, other: &Paxos) -> bool {
        let mut changed = false;
        for (&p, c) in &other.nodes {
            changed |= self.insert(p, c.clone());
        }
        changed
    }

    /// The highest proposal anyone has promised.
    pub fn highest(&self) -> Proposal {
        self.nodes
            .values()
            .map(|c| c.promise)
            .max()
            .unwrap_or_default()
    }

    /// `me` starts a new proposal, above every round seen.
    pub fn propose(&mut self, me: PeerName) {
        let round = self.highest().round.saturating_add(1);
        let mine = self.nodes.entry(me).or_default();
        mine.promise = Proposal {
            round,
            proposer: me,
        };
    }

    /// One step of `me` as acceptor (promise the highest proposal, accept
    /// what its proposer accepted) and as proposer (once `quorum` peers
    /// promised its proposal, accept a value). True if `me`'s claims changed.
    pub fn think(&mut self, me: PeerName, quorum: usize) -> bool {
        let before = self.nodes.get(&me).cloned();
        let mut mine = before.clone().unwrap_or_default();
        let highest = self.highest();
        if highest > mine.promise {
            mine.promise = highest;
        }
        let p = mine.promise;
        if !p.is_none() && mine.accepted < p {
            if p.proposer == me {
                let promised: Vec<(&PeerName, &Claims)> = self
                    .nodes
                    .iter()
                    .filter(|(&n, c)| n != me && c.promise == p)
                    .chain(std::iter::once((&me, &mine)))
                    .collect();
                if promised.len() >= quorum.max(1) {
                    // Phase 2: the value of the highest earlier acceptance
                    // among those who promised, else the promisers themselves.
                    mine.value = match promised
                        .iter()
                        .filter(|(_, c)| !c.accepted.is_none())
                        .max_by_key(|(_, c)| c.accepted)
                    {
                        Some((_, c)) => c.value.clone(),
                        None => promised.iter().map(|(&n, _)| n).collect(),
                    };
                    mine.value.sort();
                    mine.accepted = p;
                }
            } else if let Some(c) = self.nodes.values().find(|c| c.accepted == p) {
                mine.accepted = p;
                mine.value = c.value.clone();
            }
        }
        if before.as_ref() == Some(&mine) {
            return false;
        }
        self.nodes.insert(me, mine);
        true
    }

    /// The chosen value, once `quorum` peers accepted one proposal.
    pub fn decided(&self, quorum: usize) -> Option<(Proposal, Vec<PeerName>)> {
        let mut counts: BTreeMap<Proposal, usize> = BTreeMap::new();
        for c in self.nodes.values().filter(|c| !c.accepted.is_none()) {
            *counts.entry(c.accepted).or_default() += 1;
        }
        let (&p, _) = counts.iter().find(|(_, &n)| n >= quorum.max(1))?;
        let value = self.nodes.values().find(|c| c.accepted == p)?.value.clone();
        Some((p, value))
    }

    /// Peers heard from (that took part).
    pub fn heard(&self) -> Vec<PeerName> {
        self.nodes.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(n: u8) -> PeerName {
        PeerName([0, 0, 0, 0, 0, n])
    }

    /// Runs gossip rounds among `peers` (all see everything) until quiet.
    fn settle(states: &mut [Paxos], peers: &[PeerName], quorum: usize) {
        for _ in 0..50 {
            let mut changed = false;
            for i in 0..states.len() {
                changed |= states[i].think(peers[i], quorum);
                let s = states[i].clone();
                for (j, other) in states.iter_mut().enumerate() {
                    if j != i {
                        changed |= other.merge(&s);
                    }
                }
            }
            if !changed {
                return;
            }
        }
        panic!("no quiet after 50 rounds");
    }

    #[test]
    fn one_proposer_and_a_quorum_decide_the_promisers() {
        let peers = [p(1), p(2), p(3)];
        let mut s = vec![Paxos::new(); 3];
        s[1].propose(p(2));
        settle(&mut s, &peers, 3);
        for st in &s {
            let (prop, value) = st.decided(3).unwrap();
            assert_eq!(prop.proposer, p(2));
            assert_eq!(value, peers.to_vec());
        }
    }

    #[test]
    fn without_a_quorum_nothing_is_decided() {
        let peers = [p(1), p(2)];
        let mut s = vec![Paxos::new(); 2];
        s[0].propose(p(1));
        settle(&mut s, &peers, 3);
        assert_eq!(s[0].decided(3), None);
        assert_eq!(s[0].heard(), vec![p(1), p(2)]);
    }

    #[test]
    fn a_later_proposal_keeps_an_accepted_value() {
        // p1 and p2 accept p1's value {1,2} (quorum 2), p3 never heard.
        let mut a = Paxos::new();
        a.propose(p(1));
        let mut b = Paxos::new();
        b.merge(&a);
        b.think(p(2), 2);
        a.merge(&b);
        a.think(p(1), 2);
        b.merge(&a);
        b.think(p(2), 2);
        let (_, first) = b.decided(2).unwrap();
        // p3 proposes higher, hears p2 only: the value must stay.
        let mut c = Paxos::new();
        c.merge(&b);
        c.nodes.remove(&p(1));
        c.propose(p(3));
        let mut b2 = b.clone();
        b2.merge(&c);
        b2.think(p(2), 2);
        c.merge(&b2);
        c.think(p(3), 2);
        assert_eq!(c.nodes[&p(3)].value, first);
    }

    proptest! {
        /// Random delivery orders and competing proposers never decide two
        /// values (safety), and the merge is order-independent.
        #[test]
        fn never_two_values(
            proposers in proptest::collection::vec(0usize..5, 1..4),
            steps in proptest::collection::vec((0usize..5, 0usize..5), 1..200),
        ) {
            let peers: Vec<PeerName> = (1..=5).map(p).collect();
            let quorum = 3;
            let mut s = vec![Paxos::new(); 5];
            for &i in &proposers {
                s[i].propose(peers[i]);
            }
            let mut decided: Option<Vec<PeerName>> = None;
            for &(from, to) in &steps {
                s[from].think(peers[from], quorum);
                let msg = s[from].clone();
                s[to].merge(&msg);
                s[to].think(peers[to], quorum);
                for st in &s {
                    if let Some((_, v)) = st.decided(quorum) {
                        if let Some(d) = &decided {
                            prop_assert_eq!(d, &v);
                        }
                        decided = Some(v);
                    }
                }
            }
            let mut ab = s[0].clone();
            ab.merge(&s[1]);
            let mut ba = s[1].clone();
            ba.merge(&s[0]);
            prop_assert_eq!(ab, ba);
        }
    }
}
