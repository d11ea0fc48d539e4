//! The final audit, run once the workload has stopped: every id the run touched is read
//! back by id. An acknowledged write must be present with its last value, an acknowledged
//! delete must be absent, and a write whose call failed may have either outcome.

use std::collections::HashMap;

use anyhow::Result;
use serde::Serialize;

use crate::client::Client;
use crate::oracle::{vector, Oracle};
use crate::workload::Settings;

/// What the audit found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Ids read back.
    pub checked: u64,
    /// Acknowledged rows with their last value.
    pub ok: u64,
    /// Acknowledged rows missing.
    pub lost: u64,
    /// Acknowledged rows holding another value than their last acknowledged write.
    pub stale: u64,
    /// Acknowledged deletes whose row is back.
    pub resurrected: u64,
    /// Ids whose last write failed, found in one of the states it allows.
    pub uncertain_ok: u64,
    /// Ids whose last write failed, found in a state it does not allow.
    pub uncertain_bad: u64,
    /// A few examples of what went wrong.
    pub examples: Vec<String>,
}

impl Audit {
    /// Nothing acknowledged was lost, changed or brought back.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.stale == 0 && self.resurrected == 0 && self.uncertain_bad == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 20 {
            self.examples.push(s);
        }
    }
}

/// Read back every id in `oracle` through `client`.
pub async fn audit(client: &mut Client, s: &Settings, oracle: &Oracle) -> Result<Audit> {
    let mut ids: Vec<u64> = oracle
        .live
        .keys()
        .chain(oracle.deleted.keys())
        .chain(oracle.uncertain.keys())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut found: HashMap<u64, Vec<f32>> = HashMap::new();
    for chunk in ids.chunks(2_000) {
        found.extend(client.get(&s.namespace, chunk).await?);
    }
    let mut a = Audit {
        checked: ids.len() as u64,
        ..Audit::default()
    };
    let matches = |id: u64, version: u32, stored: &[f32]| {
        stored == vector(id, version, s.dim, s.clusters).as_slice()
    };
    for id in ids {
        let stored = found.get(&id);
        if let Some(&version) = oracle.live.get(&id) {
            match stored {
                None => {
                    a.lost += 1;
                    a.example(format!(
                        "id {id}: acknowledged version {version} is missing"
                    ));
                }
                Some(v) if !matches(id, version, v) => {
                    a.stale += 1;
                    a.example(format!(
                        "id {id}: holds another value than version {version}"
                    ));
                }
                Some(_) => a.ok += 1,
            }
        } else if let Some(states) = oracle.uncertain.get(&id) {
            let allowed = states.iter().any(|st| match (st, stored) {
                (None, None) => true,
                (Some(version), Some(v)) => matches(id, *version, v),
                _ => false,
            });
            if allowed {
                a.uncertain_ok += 1;
            } else {
                a.uncertain_bad += 1;
                a.example(format!("id {id}: in none of the states {states:?}"));
            }
        } else if stored.is_some() {
            a.resurrected += 1;
            a.example(format!("id {id}: deleted, but present"));
        } else {
            a.ok += 1;
        }
    }
    Ok(a)
}
