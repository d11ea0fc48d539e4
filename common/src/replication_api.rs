//! Replication messages: the replica-set configuration a coordinator gives every replica of
//! a shard, the log entries a primary streams to its backups, the status shard nodes report
//! in their heartbeats, and the in-sync changes a primary asks a coordinator for.
//!
//! | call | from → to | shape |
//! |---|---|---|
//! | DoAction `ConfigureReplica` | coordinator → shard | [`ReplicaConfig`] → [`ReplicaStatus`] |
//! | DoAction `Replicate` | primary → backup | binary: [`encode_replicate`] → [`ReplicateReply`] |
//! | DoAction `ProbeReplica` | primary → backup | [`ProbeRequest`] → [`ProbeReply`] |
//! | DoAction `TruncateReplica` | primary → backup | [`TruncateRequest`] → [`ProbeReply`] |
//! | DoAction `UpdateInSync` | primary → coordinator (internal port) | [`InSyncChange`] → [`ReplicaConfig`] |
//! | DoAction `TransferFile` | primary → backup | binary: [`encode_framed`] of [`TransferFileHeader`] and file bytes → [`TransferFileReply`] |
//! | DoAction `InstallTransfer` | primary → backup | [`InstallTransfer`] → [`ProbeReply`] |
//!
//! Only what travels is defined here; who may send what, and when, is the protocol of
//! `docs/decisions/0014-replication.md`.

use serde::{Deserialize, Serialize};

use crate::ContractError;

/// Action giving a replica its place in the replica set.
pub const ACTION_CONFIGURE_REPLICA: &str = "ConfigureReplica";
/// Action carrying log entries from a primary to a backup.
pub const ACTION_REPLICATE: &str = "Replicate";
/// Action asking a backup where its log ends.
pub const ACTION_PROBE_REPLICA: &str = "ProbeReplica";
/// Action cutting a backup's log back to an LSN (entries its primary never had).
pub const ACTION_TRUNCATE_REPLICA: &str = "TruncateReplica";
/// Action (coordinator internal port) a primary sends to change its in-sync set.
pub const ACTION_UPDATE_IN_SYNC: &str = "UpdateInSync";

/// Action carrying one piece of a sealed segment file to a backup being rebuilt.
pub const ACTION_TRANSFER_FILE: &str = "TransferFile";
/// Action switching a backup to the segment files transferred to it.
pub const ACTION_INSTALL_TRANSFER: &str = "InstallTransfer";

/// Most replicas a shard may have.
pub const MAX_REPLICATION_FACTOR: u32 = 5;

/// A replica's role in its replica set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Assigns LSNs, takes writes, streams them to the backups.
    Primary,
    /// Takes log entries only from the primary of its epoch.
    Backup,
}

/// One member of a replica set: a node and where its shard API listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub node: u64,
    /// Shard API address (`host:port`).
    pub addr: String,
}

/// The replica set of one shard as the catalog holds it at `epoch`, addressed to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Epoch: bumped on every change of primary.
    pub epoch: u64,
    /// Node this configuration is addressed to.
    pub node: u64,
    /// That node's role.
    pub role: Role,
    /// The primary.
    pub primary: Member,
    /// Every member, the primary included.
    pub members: Vec<Member>,
    /// Members that hold every acknowledged write (the primary included); a write is
    /// acknowledged once all of them have it durable.
    pub in_sync: Vec<u64>,
    /// Coordinators' internal addresses, for in-sync changes.
    pub coordinators: Vec<String>,
    /// The catalog's version of the replica set, bumped by every change of it (promotion,
    /// in-sync change, replaced member): a replica ignores a configuration older than one it
    /// has seen, such as a push computed before its own in-sync change but delivered after.
    #[serde(default)]
    pub version: u64,
}

impl ReplicaConfig {
    /// The members other than the primary.
    pub fn backups(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.node != self.primary.node)
    }
}

/// What a replica reports about itself (heartbeats, `ConfigureReplica` replies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Highest epoch the replica accepted (0: never configured).
    pub epoch: u64,
    /// Its role at that epoch (`None`: never configured).
    pub role: Option<Role>,
    /// Highest durable LSN.
    pub lsn: u64,
    /// The in-sync set it works with (a primary's view).
    pub in_sync: Vec<u64>,
    /// Why it refuses writes until reconfigured (a primary whose backup failed and whose
    /// in-sync change did not go through).
    pub fenced: Option<String>,
    /// Which namespace of this name it belongs to ([`crate::shard_api::ReplicaInfo::incarnation`]).
    #[serde(default)]
    pub incarnation: u64,
    /// Live rows it holds (what rebalancing evens out across nodes).
    #[serde(default)]
    pub rows: u64,
}

/// Header of a `Replicate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateHeader {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The sender's epoch; a backup that accepted a higher one refuses the entries.
    pub epoch: u64,
    /// The sending primary's node id.
    pub primary: u64,
    /// `(epoch, first LSN)` of the epochs the entries belong to in the primary's log (the
    /// backup records them, so a later primary can find where its log diverged).
    #[serde(default)]
    pub starts: Vec<(u64, u64)>,
}

/// Reply to `Replicate`, `ProbeReplica` and `TruncateReplica`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateReply {
    /// The backup's highest durable LSN after the call.
    pub lsn: u64,
    /// Whether the entries were appended (false: they do not follow the backup's log, which
    /// ends at `lsn`; the primary must catch it up first).
    pub appended: bool,
}

/// `ProbeReplica` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The asking primary's epoch.
    pub epoch: u64,
}

/// Where a backup's log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// Highest durable LSN.
    pub lsn: u64,
    /// Epoch of the entry at `lsn` (0 for an empty log).
    pub last_epoch: u64,
    /// LSN its checkpoint holds: the log cannot be cut below it.
    pub checkpoint_lsn: u64,
}

/// `TruncateReplica` body: drop every entry after `after_lsn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncateRequest {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The asking primary's epoch.
    pub epoch: u64,
    /// Last LSN kept.
    pub after_lsn: u64,
}

/// `UpdateInSync` body: a primary asks to drop members that failed, or to add one it caught up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InSyncChange {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The primary's epoch; a change from an older one is refused.
    pub epoch: u64,
    /// The asking primary.
    pub primary: u64,
    /// Members to take out of the in-sync set.
    #[serde(default)]
    pub remove: Vec<u64>,
    /// Members to put in (they hold every entry up to the primary's LSN).
    #[serde(default)]
    pub add: Vec<u64>,
}

/// `TransferFile` header: bytes of one file of a segment transfer, written at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferFileHeader {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The sending primary's epoch; a backup that accepted a higher one refuses.
    pub epoch: u64,
    /// The sending primary's node id.
    pub primary: u64,
    /// Names one transfer: pieces of another one found in the backup's staging area are
    /// discarded.
    pub transfer: String,
    /// Path inside the replica directory (`segments/<id>/<file>`).
    pub file: String,
    /// Where the bytes go in the file: the length it has so far (or less, to resend).
    pub offset: u64,
}

/// Reply to `TransferFile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFileReply {
    /// The file's length after the write.
    pub len: u64,
}

/// `InstallTransfer` body: every file of the manifest has been sent; check them and make
/// them the replica's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallTransfer {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The sending primary's epoch.
    pub epoch: u64,
    /// The sending primary's node id.
    pub primary: u64,
    /// The transfer the files came in.
    pub transfer: String,
    /// The primary's manifest at the transferred checkpoint (the shard's manifest format).
    pub manifest: serde_json::Value,
    /// The primary's `(epoch, first LSN)` starts up to the checkpoint.
    pub epochs: Vec<(u64, u64)>,
}

/// Frame a binary body: a little-endian `u32` header length, the header JSON, then raw
/// bytes (log entries in the WAL's own encoding for `Replicate`, file bytes for
/// `TransferFile`).
pub fn encode_framed<H: Serialize>(header: &H, bytes: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + json.len() + bytes.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(bytes);
    out
}

/// Build a `Replicate` body ([`encode_framed`] of the header and the entries).
pub fn encode_replicate(header: &ReplicateHeader, entries: &[u8]) -> Vec<u8> {
    encode_framed(header, entries)
}

/// Split a `Replicate` body into its header and entry bytes.
pub fn decode_replicate(body: &[u8]) -> Result<(ReplicateHeader, &[u8]), ContractError> {
    decode_framed("Replicate body", body)
}

/// Split a framed body (see [`encode_framed`]) into its header and bytes; `what` names the
/// body in errors.
pub fn decode_framed<'a, H: serde::de::DeserializeOwned>(
    what: &str,
    body: &'a [u8],
) -> Result<(H, &'a [u8]), ContractError> {
    let bad = |why: String| ContractError::invalid(what, why);
    if body.len() < 4 {
        return Err(bad("is shorter than its length prefix".into()));
    }
    let len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let rest = &body[4..];
    if len > rest.len() {
        return Err(bad(format!(
            "header length {len} exceeds the {} bytes sent",
            rest.len()
        )));
    }
    let header: H =
        serde_json::from_slice(&rest[..len]).map_err(|e| bad(format!("header: {e}")))?;
    Ok((header, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_bodies_round_trip_and_bad_ones_are_refused() {
        let h = ReplicateHeader {
            namespace: "a".into(),
            shard: 2,
            epoch: 7,
            primary: 3,
            starts: vec![(7, 10)],
        };
        let body = encode_replicate(&h, b"entries");
        let (back, rest) = decode_replicate(&body).expect("decode");
        assert_eq!((back, rest), (h, &b"entries"[..]));
        assert!(decode_replicate(&[1, 0]).is_err());
        assert!(decode_replicate(&[200, 0, 0, 0, b'{']).is_err());
        let mut bad = body.clone();
        bad[4] = b'x';
        assert!(decode_replicate(&bad).is_err());
    }

    #[test]
    fn random_and_mutated_bodies_never_panic_the_parser() {
        let good = encode_replicate(
            &ReplicateHeader {
                namespace: "ns".into(),
                shard: 1,
                epoch: 2,
                primary: 3,
                starts: vec![(2, 5)],
            },
            b"payload",
        );
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut body = if round % 2 == 0 {
                good.clone()
            } else {
                (0..(next() % 64) as usize).map(|_| next() as u8).collect()
            };
            if !body.is_empty() {
                for _ in 0..(next() % 4) {
                    let at = (next() as usize) % body.len();
                    body[at] = next() as u8;
                }
                body.truncate((next() as usize) % (body.len() + 1));
            }
            let _ = decode_replicate(&body);
            let _ = decode_framed::<TransferFileHeader>("TransferFile body", &body);
        }
    }
}
