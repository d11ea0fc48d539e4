//! A real full disk: `longbow local` runs on a 48 MiB tmpfs mounted in a user and mount
//! namespace of its own (`unshare`, no privileges needed), and is written to until the disk
//! is full. Writes are refused with RESOURCE_EXHAUSTED (`disk_full`), reads keep working,
//! the catalog refuses to grow but still deletes, health says degraded, and once a delete
//! freed space the refused namespace takes writes again by itself.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tonic::Code;

const DIM: usize = 64;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `longbow local` on a fresh tmpfs of `mib` MiB at `dir`, seen only by that process.
fn local_on_tmpfs(dir: &std::path::Path, mib: u32) -> (Killed, String, String, String) {
    let script = format!(
        "mount -t tmpfs -o size={mib}m tmpfs \"$1\" && exec \"$2\" local --data-dir \"$1\" \
         --data-port 0 --meta-port 0 --http-port 0 --shards 1 --wal-segment-bytes 1048576 \
         --checkpoint-interval-secs 3600"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(dir)
    .arg(env!("CARGO_BIN_EXE_longbow"))
    .env("LONGBOW_LOG", "error")
    .stdout(Stdio::piped());
    let (child, line) = spawn_until_first_line(cmd);
    (
        Killed(child),
        word(&line, "data"),
        word(&line, "meta"),
        word(&line, "http"),
    )
}

fn batch(lo: u64, n: u64) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (lo..lo + n).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| (0..DIM).map(move |d| ((i * 31 + d as u64) % 97) as f32))
        .collect();
    rows(&ids, &data, DIM)
}

/// Write batches of `n` rows to `ns` until a write fails (at most `limit` batches): the
/// rows acknowledged and the error.
async fn fill(
    d: &mut arrow_flight::FlightClient,
    ns: &str,
    n: u64,
    limit: u64,
) -> (u64, tonic::Status) {
    let mut acked = 0;
    for _ in 0..limit {
        match put(d, ns, vec![batch(acked, n)]).await {
            Ok(_) => acked += n,
            Err(e) => return (acked, e),
        }
    }
    panic!("{ns}: {limit} batches of {n} rows never filled the disk");
}

fn code_of(e: &tonic::Status) -> String {
    e.metadata()
        .get("x-longbow-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_deletes_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_local, data, meta, http) = local_on_tmpfs(tmp.path(), 48);
    let rt = runtime();
    rt.block_on(async {
        let mut m = connect(&meta).await;
        let mut d = connect(&data).await;
        for name in ["filler", "kept"] {
            action(
                &mut m,
                "CreateNamespace",
                json!({"name": name, "dim": DIM, "metric": "l2"}),
            )
            .await
            .expect("create");
        }
        // Fill the disk (bounded: 48 MiB holds far fewer than 400 batches of 2,000 rows),
        // then top it up with small batches of the other namespace.
        let (acked, full) = fill(&mut d, "filler", 2_000, 400).await;
        assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
        assert_eq!(code_of(&full), "disk_full", "{full:?}");
        assert!(acked > 0);
        let (kept, full) = fill(&mut d, "kept", 50, 2_000).await;
        assert_eq!(code_of(&full), "disk_full", "{full:?}");
        // Reads keep working and see every acknowledged row, nothing of the refused ones.
        let stats = action(&mut m, "GetNamespace", json!({"name": "filler"}))
            .await
            .expect("stats");
        assert_eq!(stats["count"], acked);
        let found = do_get(
            &mut d,
            json!({"get": {"namespace": "filler", "ids": [0, acked - 1, acked]}}),
        )
        .await
        .expect("get");
        assert_eq!(found.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        // The catalog refuses to grow, and says why; health says degraded.
        let err = action(
            &mut m,
            "CreateNamespace",
            json!({"name": "more", "dim": DIM}),
        )
        .await
        .expect_err("no room for a new namespace");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert_eq!(code_of(&err), "disk_full");
        let health = http_get(&format!("http://{http}"), "/healthz");
        assert!(health.contains("degraded"), "{health}");
        // Deleting frees space: then the refused namespace takes writes again by itself.
        action(&mut m, "DeleteNamespace", json!({"name": "filler"}))
            .await
            .expect("a delete is accepted on a full disk");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match put(&mut d, "kept", vec![batch(kept, 100)]).await {
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(code_of(&e), "disk_full", "{e:?}");
                    assert!(Instant::now() < deadline, "writes never resumed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let stats = action(&mut m, "GetNamespace", json!({"name": "kept"}))
            .await
            .expect("stats");
        assert_eq!(stats["count"], kept + 100);
        action(
            &mut m,
            "CreateNamespace",
            json!({"name": "more", "dim": DIM}),
        )
        .await
        .expect("the catalog grows again");
        let health = http_get(&format!("http://{http}"), "/healthz");
        assert!(health.ends_with("ok\n"), "{health}");
    });
}
