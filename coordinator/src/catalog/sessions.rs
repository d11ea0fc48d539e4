//! Proposer sessions: what makes a retried catalog proposal apply once.
//!
//! Every coordinator process proposes under its own origin (its node id and start time) with
//! a counter. A proposal whose answer was lost (a leader change, a dropped forward) is sent
//! again with the same number; the session finds the first outcome and answers it without
//! applying the change twice. Each proposal also names the lowest number its proposer still
//! waits on (`done_below`): outcomes under it have been delivered and are dropped, so a
//! session holds only what is in flight, and the catalog stays the size of the live catalog,
//! not of its history (the Raft dissertation's client sessions, section 6.3).
//!
//! This module must never hold anything but outcomes still owed to a proposer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CatalogResponse;

/// Origins remembered: coordinator processes that proposed lately. A restarted process
/// starts a new origin, so the oldest ones belong to processes that are gone.
pub const ORIGINS_KEPT: usize = 64;

/// Outcomes kept per origin: far more proposals than one process has in flight at once.
pub const OUTCOMES_KEPT: usize = 4096;

/// One proposer's outstanding outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Session {
    /// Every proposal under this number has been answered to its proposer.
    done_below: u64,
    /// Outcomes of proposals at or above `done_below`, by number.
    outcomes: BTreeMap<u64, CatalogResponse>,
    /// Log order of the latest proposal (for forgetting the oldest origin).
    last_used: u64,
}

/// Sessions by origin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    by_origin: BTreeMap<String, Session>,
    applied: u64,
}

/// What a keyed proposal should do.
pub enum Seen {
    /// Never applied: apply it and [`Sessions::record`] the outcome.
    New,
    /// Applied before: answer this and change nothing.
    Again(CatalogResponse),
}

impl Sessions {
    /// Whether proposal `seq` of `origin` was applied already; drops the outcomes its
    /// proposer says it has received (`done_below`).
    pub fn check(&mut self, origin: &str, seq: u64, done_below: u64) -> Seen {
        self.applied += 1;
        let now = self.applied;
        let session = self.by_origin.entry(origin.to_string()).or_default();
        session.last_used = now;
        if done_below > session.done_below {
            session.done_below = done_below;
            session.outcomes = session.outcomes.split_off(&done_below);
        }
        if let Some(out) = session.outcomes.get(&seq) {
            return Seen::Again(out.clone());
        }
        if seq < session.done_below {
            // Its proposer has its answer already: this is a copy delayed in the network.
            return Seen::Again(CatalogResponse::Conflict(format!(
                "proposal {origin}:{seq} was answered already"
            )));
        }
        Seen::New
    }

    /// Keep the outcome of proposal `seq` of `origin` (after [`Sessions::check`] said New).
    pub fn record(&mut self, origin: &str, seq: u64, out: CatalogResponse) {
        if let Some(session) = self.by_origin.get_mut(origin) {
            session.outcomes.insert(seq, out);
            while session.outcomes.len() > OUTCOMES_KEPT {
                session.outcomes.pop_first();
            }
        }
        while self.by_origin.len() > ORIGINS_KEPT {
            let oldest = self
                .by_origin
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(o, _)| o.clone());
            match oldest {
                Some(o) => self.by_origin.remove(&o),
                None => break,
            };
        }
    }

    /// Outcomes held, over all origins.
    pub fn outcomes_held(&self) -> usize {
        self.by_origin.values().map(|s| s.outcomes.len()).sum()
    }

    /// Origins held.
    pub fn origins_held(&self) -> usize {
        self.by_origin.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn propose(s: &mut Sessions, origin: &str, seq: u64, done_below: u64) -> Option<String> {
        match s.check(origin, seq, done_below) {
            Seen::New => {
                s.record(origin, seq, CatalogResponse::Ok);
                None
            }
            Seen::Again(out) => Some(format!("{out:?}")),
        }
    }

    #[test]
    fn a_retried_proposal_gets_its_first_outcome() {
        let mut s = Sessions::default();
        assert_eq!(propose(&mut s, "1:5", 0, 0), None);
        assert_eq!(propose(&mut s, "1:5", 0, 0), Some("Ok".into()));
        // Another origin with the same number is another proposal.
        assert_eq!(propose(&mut s, "2:9", 0, 0), None);
    }

    #[test]
    fn outcomes_its_proposer_has_received_are_dropped() {
        let mut s = Sessions::default();
        for seq in 0..100 {
            propose(&mut s, "1:5", seq, seq);
        }
        // Each proposal said every earlier one was answered: only the last is held.
        assert_eq!(s.outcomes_held(), 1);
        // A late copy of an answered proposal changes nothing.
        assert!(propose(&mut s, "1:5", 3, 99).is_some_and(|o| o.contains("answered already")));
    }

    #[test]
    fn outcomes_in_flight_are_kept_until_answered() {
        let mut s = Sessions::default();
        propose(&mut s, "1:5", 0, 0);
        propose(&mut s, "1:5", 1, 0);
        propose(&mut s, "1:5", 2, 0);
        assert_eq!(s.outcomes_held(), 3);
        assert_eq!(propose(&mut s, "1:5", 1, 1), Some("Ok".into()));
        assert_eq!(s.outcomes_held(), 2);
    }

    #[test]
    fn the_oldest_origins_are_forgotten_past_the_limit() {
        let mut s = Sessions::default();
        for o in 0..ORIGINS_KEPT + 3 {
            propose(&mut s, &format!("{o}:1"), 0, 0);
        }
        assert_eq!(s.origins_held(), ORIGINS_KEPT);
        // The newest is still known; the first was forgotten.
        assert!(propose(&mut s, &format!("{}:1", ORIGINS_KEPT + 2), 0, 0).is_some());
    }
}
