//! SIGTERM stops a real `longbow local` within seconds even while it is far behind on
//! linking rows into graphs, and nothing acknowledged is lost: the next start has every row
//! and links the rest.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const DIM: usize = 64;
const ROWS: u64 = 150_000;

#[test]
fn sigterm_during_indexing_exits_promptly_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = runtime();
    let mut local = Local::start(tmp.path(), 1);
    rt.block_on(async {
        let mut meta = local.meta_client().await;
        let mut data = local.data_client().await;
        action(
            &mut meta,
            "CreateNamespace",
            json!({"name": "big", "dim": DIM}),
        )
        .await
        .expect("create");
        let mut batches = Vec::new();
        for lo in (0..ROWS).step_by(10_000) {
            let ids: Vec<u64> = (lo..lo + 10_000).collect();
            let v: Vec<f32> = ids
                .iter()
                .flat_map(|&i| (0..DIM).map(move |d| ((i * 131 + d as u64 * 7) % 1_009) as f32))
                .collect();
            batches.push(rows(&ids, &v, DIM));
        }
        put(&mut data, "big", batches).await.expect("put");
        let lag = action(&mut meta, "GetNamespace", json!({"name": "big"}))
            .await
            .expect("stats")["indexing_lag"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            lag > 0,
            "linking must still be behind for this test to mean anything"
        );
    });
    // SAFETY: signalling our own child by pid.
    unsafe {
        libc::kill(local.child.id() as i32, libc::SIGTERM);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = local.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status}");
    drop(local);
    let local = Local::start(tmp.path(), 1);
    rt.block_on(async {
        let mut meta = local.meta_client().await;
        let stats = action(&mut meta, "GetNamespace", json!({"name": "big"}))
            .await
            .expect("stats");
        assert_eq!(stats["count"], ROWS, "every acknowledged row is back");
    });
    local.stop();
}
