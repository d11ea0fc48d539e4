//! Which replica a shard call goes to, and what happens when it fails.
//!
//! - Writes go to the shard's primary with the epoch the catalog gives it. A retryable
//!   failure (the primary died, was deposed, or is failing over) is retried against the
//!   catalog's current primary until the request deadline; writes are upserts and deletes by
//!   id, so a retry after an unknown outcome is safe.
//! - Reads go to a live in-sync member, rotating among them (or to the primary alone when
//!   the request asks for `"consistency": "primary"`); a retryable failure moves on to the
//!   next member.
//! - A call to a node is abandoned as soon as the coordinator counts that node as dead (no
//!   heartbeat within the failure timeout): a stopped node is never waited on for the whole
//!   deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use longbow_common::ErrorExt;

use crate::catalog::{NamespaceMeta, NodeId};
use crate::error::{CoordinatorError, Result};
use crate::node::{Coordinator, ShardTarget};

/// How often an in-flight call checks whether its node is still live.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// Which replicas a read may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Any in-sync replica (it has every acknowledged write; it may also show a write a
    /// moment before its acknowledgement).
    #[default]
    Any,
    /// The primary only.
    Primary,
}

impl Consistency {
    /// Read the request field `consistency` (`"any"` or `"primary"`).
    pub fn from_json(
        field: &str,
        v: Option<&serde_json::Value>,
    ) -> std::result::Result<Consistency, longbow_common::ContractError> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(Consistency::Any),
            Some(serde_json::Value::String(s)) if s == "any" => Ok(Consistency::Any),
            Some(serde_json::Value::String(s)) if s == "primary" => Ok(Consistency::Primary),
            Some(other) => Err(longbow_common::ContractError::invalid(
                field,
                format!("must be \"any\" or \"primary\", got {other}"),
            )),
        }
    }
}

/// A shard's primary as the catalog says now.
pub(crate) enum PrimaryNow {
    /// Live: call it with this epoch.
    Live(ShardTarget, u64),
    /// Not callable at the moment (down while a backup takes over, or not registered yet);
    /// the error says why, and a retry may find the new primary.
    Unreachable(CoordinatorError),
}

/// Rotates reads over in-sync members.
static NEXT_READ: AtomicUsize = AtomicUsize::new(0);

impl Coordinator {
    /// The call target of member `node` of a shard (live or not).
    pub fn member_addr(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        node: NodeId,
    ) -> Result<ShardTarget> {
        let addr = self.node_addr(node).map_err(|why| {
            CoordinatorError::Unavailable(format!("namespace '{}' shard {shard}: {why}", meta.name))
        })?;
        Ok(ShardTarget {
            namespace: meta.name.clone(),
            shard,
            node,
            addr,
        })
    }

    /// Run `call` on `to`, giving up as soon as its node counts as dead.
    pub(crate) async fn unless_dead<T>(
        &self,
        to: &ShardTarget,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let watch = async {
            loop {
                tokio::time::sleep(LIVENESS_POLL).await;
                if !self.is_live(to.node) {
                    return;
                }
            }
        };
        tokio::select! {
            r = call => r,
            _ = watch => Err(CoordinatorError::Unavailable(format!(
                "{to}: the node stopped sending heartbeats; not waiting for it"
            ))),
        }
    }

    /// Where a write to shard `shard` of namespace `name` goes now. An error means no
    /// retry can help (no such shard, or its primary is down with no in-sync backup live).
    pub(crate) fn primary_now(&self, name: &str, shard: u32) -> Result<PrimaryNow> {
        let meta = self.namespace(name)?;
        let set = meta.placement.get(shard as usize).ok_or_else(|| {
            CoordinatorError::Internal(format!("namespace {name} has no shard {shard}"))
        })?;
        if self.is_live(set.primary) {
            return Ok(match self.member_addr(&meta, shard, set.primary) {
                Ok(to) => PrimaryNow::Live(to, set.epoch),
                Err(e) => PrimaryNow::Unreachable(e),
            });
        }
        if set
            .in_sync()
            .iter()
            .any(|n| *n != set.primary && self.is_live(*n))
        {
            return Ok(PrimaryNow::Unreachable(CoordinatorError::Unavailable(format!(
                "namespace '{name}' shard {shard} on node {}: the node is down; an in-sync backup takes over",
                set.primary
            ))));
        }
        // Nothing can take over: say so at once.
        Err(CoordinatorError::Unavailable(format!(
            "namespace '{name}' shard {shard} on node {}: the node is down and no in-sync backup is live",
            set.primary
        )))
    }

    /// Run `call(target, epoch)` on the primary of shard `shard` of namespace `name`,
    /// retrying retryable failures against the catalog's current primary until the request
    /// deadline.
    pub async fn on_primary<T, F, Fut>(&self, name: &str, shard: u32, call: F) -> Result<T>
    where
        F: Fn(ShardTarget, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = match self.primary_now(name, shard)? {
                PrimaryNow::Live(to, epoch) => self.unless_dead(&to.clone(), call(to, epoch)).await,
                PrimaryNow::Unreachable(e) => Err(e),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if retry_write(&e) && Instant::now() + delay < deadline => {
                    tracing::debug!(namespace = name, shard, error = %e, "write to the primary failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The members a read of shard `shard` may go to, in the order to try them.
    pub fn read_order(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        consistency: Consistency,
    ) -> Result<Vec<NodeId>> {
        let set = meta.placement.get(shard as usize).ok_or_else(|| {
            CoordinatorError::Internal(format!("namespace {} has no shard {shard}", meta.name))
        })?;
        let mut nodes: Vec<NodeId> = match consistency {
            Consistency::Primary => vec![set.primary],
            Consistency::Any => set.in_sync(),
        };
        nodes.retain(|n| self.is_live(*n));
        if nodes.is_empty() {
            return Err(CoordinatorError::Unavailable(format!(
                "namespace '{}' shard {shard}: no live {} (members {:?}, in sync {:?})",
                meta.name,
                if consistency == Consistency::Primary {
                    "primary"
                } else {
                    "in-sync replica"
                },
                set.members(),
                set.in_sync()
            )));
        }
        let start = NEXT_READ.fetch_add(1, Ordering::Relaxed) % nodes.len();
        nodes.rotate_left(start);
        Ok(nodes)
    }

    /// Run a read on one replica of a shard, moving to the next in-sync member when one
    /// fails with a retryable error.
    pub async fn on_replica<T, F, Fut>(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        consistency: Consistency,
        call: F,
    ) -> Result<T>
    where
        F: Fn(ShardTarget) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = None;
        for node in self.read_order(meta, shard, consistency)? {
            let to = match self.member_addr(meta, shard, node) {
                Ok(t) => t,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match self.unless_dead(&to.clone(), call(to)).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CoordinatorError::Unavailable("no replica answered".into())))
    }
}

impl Coordinator {
    /// A search of one shard: to the best live in-sync member, hedged to the next best when
    /// it is late ([`crate::hedging`]); when the answer is a retryable error, on to the
    /// remaining members one by one.
    pub async fn search_replica<'a>(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        consistency: Consistency,
        call: &'a crate::hedging::SearchCall<'a>,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let mut nodes = self.read_order(meta, shard, consistency)?;
        self.replicas.best_first(&mut nodes);
        let mut last = None;
        let mut targets = Vec::new();
        for node in nodes {
            match self.member_addr(meta, shard, node) {
                Ok(t) => targets.push(t),
                Err(e) => last = Some(e),
            }
        }
        let rest: Vec<ShardTarget> = targets.iter().skip(1).cloned().collect();
        if !targets.is_empty() {
            match self.replicas.search(targets, call).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        for to in rest {
            match call(to).await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CoordinatorError::Unavailable("no replica answered".into())))
    }
}

/// Whether a failed write may go to the (possibly new) primary again: the replica set is
/// changing or the primary is unreachable. A full disk or back-pressure is answered at once.
pub(crate) fn retry_write(e: &CoordinatorError) -> bool {
    e.retryable() && !matches!(e.error_code(), "disk_full" | "overloaded")
}
