//! The catalog under faults: a probe that changes the catalog as fast as it is answered
//! (creates declared namespaces, deletes fifteen of every sixteen again), and the checks after
//! the run: every coordinator holds the same catalog, every acknowledged creation is there,
//! every acknowledged deletion stays done, and no change was refused with an error that says
//! a retry cannot help (during a leader change a client may see only retryable errors).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use longbow_soak::client::{may_retry, Client};
use longbow_soak::cluster::Cluster;
use longbow_soak::workload::Run;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use crate::probe::{Log, Sample};

/// Names of the probe's namespaces start with it.
const PREFIX: &str = "catalog-probe-";
/// Pause between two probe changes.
const GAP: Duration = Duration::from_millis(20);
/// Refusals kept as examples in the report.
const EXAMPLES: usize = 10;

/// What the probe had acknowledged, and what it was refused.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Namespaces whose creation was acknowledged and that were not deleted again.
    kept: BTreeSet<String>,
    /// Namespaces whose deletion was acknowledged.
    deleted: BTreeSet<String>,
    /// Changes refused with an error that says a retry cannot help.
    refused: Vec<String>,
    refused_count: u64,
}

impl Outcomes {
    fn failed(&mut self, what: &str, e: &anyhow::Error) {
        if !may_retry(e) {
            self.refused_count += 1;
            if self.refused.len() < EXAMPLES {
                self.refused.push(format!("{what}: {e:#}"));
            }
        }
    }
}

/// Change the catalog until the run stops, logging each call in `log.catalog`.
pub async fn changes(
    run: Run,
    mut client: Client,
    log: Arc<Mutex<Log>>,
    out: Arc<Mutex<Outcomes>>,
) {
    let mut n = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("{PREFIX}{n}");
        let created = logged(
            &log,
            client.action("CreateNamespace", json!({ "name": name })),
        )
        .await;
        match created {
            Err(e) => out.lock().failed(&format!("creating {name}"), &e),
            Ok(_) if n.is_multiple_of(16) => {
                out.lock().kept.insert(name);
            }
            Ok(_) => {
                tokio::time::sleep(GAP).await;
                let deleted = logged(
                    &log,
                    client.action("DeleteNamespace", json!({ "name": name })),
                )
                .await;
                match deleted {
                    Ok(_) => {
                        out.lock().deleted.insert(name);
                    }
                    Err(e) => out.lock().failed(&format!("deleting {name}"), &e),
                }
            }
        }
        tokio::time::sleep(GAP).await;
    }
}

/// Run one probe call, logging when it was sent, when it finished and whether it worked.
async fn logged<T>(
    log: &Mutex<Log>,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let sent = Instant::now();
    let out = call.await;
    log.lock().catalog.push(Sample {
        sent,
        done: Instant::now(),
        ok: out.is_ok(),
    });
    out
}

/// The catalog checks' findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatalogAudit {
    /// Coordinators compared.
    pub coordinators: usize,
    /// Acknowledged creations checked (kept namespaces).
    pub kept: usize,
    /// Acknowledged deletions checked.
    pub deleted: usize,
    /// Kept namespaces missing from the catalog.
    pub lost: Vec<String>,
    /// Deleted namespaces back in the catalog.
    pub undeleted: Vec<String>,
    /// Changes refused with a non-retryable error, and examples.
    pub refused: u64,
    /// Examples of those refusals.
    pub refused_examples: Vec<String>,
    /// Set when the coordinators never came to hold the same catalog.
    pub diverged: Option<String>,
}

impl CatalogAudit {
    /// What is wrong, one line each (empty: nothing).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(d) = &self.diverged {
            f.push(format!("catalog: coordinators disagree: {d}"));
        }
        if !self.lost.is_empty() {
            f.push(format!(
                "catalog: {} acknowledged namespace creations lost: {:?}",
                self.lost.len(),
                self.lost.iter().take(EXAMPLES).collect::<Vec<_>>()
            ));
        }
        if !self.undeleted.is_empty() {
            f.push(format!(
                "catalog: {} acknowledged deletions undone: {:?}",
                self.undeleted.len(),
                self.undeleted.iter().take(EXAMPLES).collect::<Vec<_>>()
            ));
        }
        if self.refused > 0 {
            f.push(format!(
                "catalog: {} changes refused with a non-retryable error: {:?}",
                self.refused, self.refused_examples
            ));
        }
        f
    }
}

/// One coordinator's catalog as the checks compare it: namespace names and the placement of
/// each shard of `ns` (primary, backups, in-sync set, epoch).
async fn catalog_of(client: &mut Client, ns: &str) -> Result<Value> {
    let list = client.action("ListNamespaces", json!({})).await?;
    let stats = client.action("GetNamespace", json!({ "name": ns })).await?;
    let placement: Vec<Value> = stats["per_shard"]
        .as_array()
        .ok_or_else(|| anyhow!("GetNamespace without per_shard: {stats}"))?
        .iter()
        .map(|s| json!([s["primary"], s["backups"], s["in_sync"], s["epoch"]]))
        .collect();
    Ok(json!({ "namespaces": list["namespaces"], "placement": placement }))
}

/// After the run (the probe stopped): wait (bounded by `within`) until every coordinator
/// answers with the same catalog, then check the probe's acknowledged changes against it.
pub async fn audit(
    cluster: &Cluster,
    ns: &str,
    outcomes: &Outcomes,
    within: Duration,
) -> Result<CatalogAudit> {
    let mut clients = Vec::new();
    for c in &cluster.coordinators {
        clients.push(Client::connect(&c.data, &c.meta).await?);
    }
    let mut a = CatalogAudit {
        coordinators: clients.len(),
        kept: outcomes.kept.len(),
        deleted: outcomes.deleted.len(),
        refused: outcomes.refused_count,
        refused_examples: outcomes.refused.clone(),
        ..CatalogAudit::default()
    };
    let started = Instant::now();
    let agreed = loop {
        let mut seen = Vec::new();
        for (c, client) in cluster.coordinators.iter().zip(&mut clients) {
            match catalog_of(client, ns).await {
                Ok(v) => seen.push(v),
                Err(e) => seen.push(json!({ "coordinator": c.name, "error": e.to_string() })),
            }
        }
        let same = seen.windows(2).all(|w| w[0] == w[1]) && seen[0].get("error").is_none();
        if same {
            break seen.swap_remove(0);
        }
        if started.elapsed() > within {
            let names: Vec<&str> = cluster
                .coordinators
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            a.diverged = Some(format!("after {within:?}: {names:?} hold {seen:?}"));
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed: BTreeSet<String> = agreed["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    a.lost = outcomes.kept.difference(&listed).cloned().collect();
    a.undeleted = outcomes.deleted.intersection(&listed).cloned().collect();
    Ok(a)
}
