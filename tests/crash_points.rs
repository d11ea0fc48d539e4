//! Every step of sealing, merging, checkpointing and WAL deletion survives a crash at any
//! point: a real `longbow local` is started with one crash point armed (`FAILPOINTS`), made to
//! write, seal, merge and checkpoint until the point aborts the process (as abruptly as
//! `kill -9`), then started again without it. Every acknowledged write must be back with its
//! last acknowledged value, and the restarted process must checkpoint and restart again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const DIM: usize = 4;
const IDS: u64 = 400;
const ROUNDS: u64 = 4;

/// Tiny segments and WAL files and a checkpoint every second, so a few writes seal, merge
/// (each round replaces every row: sealed segments pass the compaction threshold) and
/// delete WAL files.
const STORAGE: &[&str] = &[
    "--segment-rows",
    "500",
    "--wal-segment-bytes",
    "4096",
    "--checkpoint-interval-secs",
    "1",
];

/// Row `id` of round `round`: the vector carries both, so the stored version is readable.
fn round_batch(round: u64) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (0..IDS).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| [i as f32, round as f32, 1.0, 1.0])
        .collect();
    rows(&ids, &data, DIM)
}

/// Which rounds each id may hold: its last acknowledged one, or any later attempt that was
/// cut off by the crash (never acknowledged, so either outcome is correct).
type Allowed = BTreeMap<u64, Vec<u64>>;

async fn write_until_crash(local: &mut Local) -> Allowed {
    let mut meta = local.meta_client().await;
    action(
        &mut meta,
        "CreateNamespace",
        json!({"name": "crash", "dim": DIM, "metric": "l2", "shards": 1}),
    )
    .await
    .expect("create");
    let mut data = local.data_client().await;
    let mut allowed: Allowed = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0..ROUNDS {
        match put(&mut data, "crash", vec![round_batch(round)]).await {
            Ok(_) => {
                for id in 0..IDS {
                    allowed.insert(id, vec![round]);
                }
            }
            Err(_) => {
                for id in 0..IDS {
                    allowed.entry(id).or_default().push(round);
                }
                break;
            }
        }
        // Let the background task seal and checkpoint between rounds.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Keep the process busy with checkpoints until the armed point aborts it.
    while local.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the crash point was never reached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = local.child.wait().expect("status");
    assert!(!status.success(), "the crash point aborted the process");
    allowed
}

async fn stored_rounds(local: &Local) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for (id, v) in stored_vectors(local, "crash", IDS).await {
        assert_eq!(v[0], id as f32, "row {id} is its own");
        out.insert(id, v[1] as u64);
    }
    out
}

fn crash_at(point: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rt = runtime();
    let arm = format!("{point}=return");
    let mut local = Local::start_with(&dir, 1, STORAGE, &[("FAILPOINTS", &arm)]);
    let allowed = rt.block_on(write_until_crash(&mut local));
    drop(local);
    assert!(
        !allowed.is_empty(),
        "{point}: no write was acknowledged before the crash"
    );
    let check = |local: &Local| {
        let stored = rt.block_on(stored_rounds(local));
        for (id, rounds) in &allowed {
            let got = stored.get(id).copied();
            assert!(
                got.is_some_and(|r| rounds.contains(&r)),
                "{point}: id {id} holds round {got:?}, acknowledged rounds allow {rounds:?}"
            );
        }
    };
    let local = Local::start_with(&dir, 1, STORAGE, &[]);
    check(&local);
    // The restarted process checkpoints (the interval is a second) and restarts cleanly.
    std::thread::sleep(Duration::from_millis(2_500));
    local.stop();
    let local = Local::start_with(&dir, 1, STORAGE, &[]);
    check(&local);
    local.stop();
    assert_no_leftovers(&dir, point);
}

/// After a clean restart, nothing half-written is left in any replica directory.
fn assert_no_leftovers(dir: &Path, point: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.ends_with(".tmp"),
                "{point}: {} was left behind",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn a_crash_before_a_sealed_segment_is_written_loses_nothing() {
    crash_at("checkpoint::before_segment_files");
}

#[test]
fn a_crash_after_segment_files_but_before_the_manifest_loses_nothing() {
    crash_at("checkpoint::after_segment_files");
}

#[test]
fn a_crash_just_before_the_manifest_switch_loses_nothing() {
    crash_at("checkpoint::before_manifest");
}

#[test]
fn a_crash_right_after_the_manifest_switch_loses_nothing() {
    crash_at("checkpoint::after_manifest");
}

#[test]
fn a_crash_before_wal_deletion_loses_nothing() {
    crash_at("checkpoint::before_wal_removal");
}

#[test]
fn a_crash_between_deleting_two_wal_files_loses_nothing() {
    crash_at("wal::before_remove_file");
}

#[test]
fn a_crash_before_a_merged_segment_is_swapped_in_loses_nothing() {
    crash_at("merge::before_install");
}
