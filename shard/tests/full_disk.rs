//! A full disk, through the WAL's file backend: a write that hits ENOSPC is refused with
//! `DiskFull` (RESOURCE_EXHAUSTED on the wire) and leaves nothing behind, reads keep
//! working, the next writes resume by themselves once space is back with a gapless LSN
//! sequence, and a restart finds exactly the acknowledged rows. Any other write failure
//! still stops the replica's writes until a restart.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use common::*;
use longbow_common::shard_api::ReplicaInfo;
use longbow_common::{ErrorExt, IdType, IndexParams, Metric, StatusCode};
use longbow_shard::payload::PayloadSchema;
use longbow_shard::replica::{Host, Replica, ReplicaSettings};
use longbow_shard::wal::io::{LogBackend, LogFile};
use longbow_shard::wal::StdBackend;
use longbow_shard::ShardError;

const OK: u8 = 0;
const FULL: u8 = 1;
const BROKEN: u8 = 2;

/// Files that write half of each append and then fail with ENOSPC while the disk is "full",
/// or fail `fdatasync` with EIO while it is "broken".
struct Disk(Arc<AtomicU8>);

struct DiskFile {
    file: File,
    state: Arc<AtomicU8>,
}

impl LogFile for DiskFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.state.load(Ordering::Relaxed) == FULL {
            self.file.write_all(&data[..data.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all(data)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.state.load(Ordering::Relaxed) == BROKEN {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
}

impl LogBackend for Disk {
    fn name(&self) -> &'static str {
        "test-disk"
    }

    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(DiskFile {
            file,
            state: self.0.clone(),
        }))
    }
}

fn host(backend: Arc<dyn LogBackend>) -> Host {
    Host::new(ReplicaSettings::default(), backend, 1, 1).expect("worker pools")
}

fn info() -> ReplicaInfo {
    ReplicaInfo {
        namespace: "full".into(),
        shard: 0,
        dim: 4,
        metric: Metric::L2,
        id_type: IdType::Uint64,
        index: IndexParams::default(),
        incarnation: 1,
    }
}

fn write(r: &Replica, lo: u64, hi: u64) -> Result<(u64, u64), ShardError> {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids.iter().flat_map(|&i| [i as f32; 4]).collect();
    runtime().block_on(r.upsert(&batch(&ids, &data, 4)))
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("replica");
    let state = Arc::new(AtomicU8::new(OK));
    {
        let r = Replica::create(
            &dir,
            info(),
            PayloadSchema::default(),
            &host(Arc::new(Disk(state.clone()))),
        )
        .expect("create");
        let (lsn, _) = write(&r, 0, 100).expect("write");
        state.store(FULL, Ordering::Relaxed);
        for _ in 0..3 {
            let err = write(&r, 100, 200).expect_err("the disk is full");
            assert!(matches!(err, ShardError::DiskFull { .. }), "{err}");
            assert_eq!(err.status_code(), StatusCode::ResourceExhausted);
            assert!(err.retryable());
        }
        assert_eq!(
            r.stats().count,
            100,
            "nothing of a refused write is visible"
        );
        assert!(r.write_fault().is_some_and(|f| f.contains("disk full")));
        let hits = r
            .get(&[longbow_common::IdValue::U64(5)], &Default::default())
            .expect("reads keep working");
        assert_eq!(hits.num_rows(), 1);
        state.store(OK, Ordering::Relaxed);
        let (next, rows) = write(&r, 200, 250).expect("writes resume");
        assert_eq!((next, rows), (lsn + 1, 50), "the LSN sequence has no gap");
        assert!(r.write_fault().is_none());
        r.shutdown();
    }
    let r = Replica::open(&dir, &host(Arc::new(StdBackend))).expect("reopen");
    let stats = r.stats();
    assert_eq!(
        (stats.count, stats.lsn),
        (150, 2),
        "exactly the acknowledged rows"
    );
}

#[test]
fn a_failed_fdatasync_stops_writes_until_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("replica");
    let state = Arc::new(AtomicU8::new(OK));
    let r = Replica::create(
        &dir,
        info(),
        PayloadSchema::default(),
        &host(Arc::new(Disk(state.clone()))),
    )
    .expect("create");
    write(&r, 0, 10).expect("write");
    state.store(BROKEN, Ordering::Relaxed);
    assert!(matches!(
        write(&r, 10, 20),
        Err(ShardError::Unavailable { .. })
    ));
    state.store(OK, Ordering::Relaxed);
    let err = write(&r, 20, 30).expect_err("still refused: the log cannot be trusted");
    assert!(err.to_string().contains("needs a restart"), "{err}");
    r.shutdown();
    drop(r);
    let r = Replica::open(&dir, &host(Arc::new(StdBackend))).expect("reopen");
    assert!(r.stats().count >= 10, "acknowledged rows survive");
}
