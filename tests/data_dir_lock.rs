//! Every role holds an exclusive lock on its data directory: a second `longbow shard` or
//! `longbow coordinator` on a directory in use exits at once, naming the holder's pid, and the
//! first keeps serving. After the holder is killed with SIGKILL the directory opens again
//! (the kernel releases the lock with the process).

mod common;

/// A role on `dir`, without backtraces in its error output.
fn role(args: &[&str], dir: &Path) -> Command {
    let mut cmd = longbow_cmd(args, dir);
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Run `cmd` to its exit (bounded): its status and stderr.
fn refused(mut cmd: Command) -> (bool, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read");
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second process did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_process_on_a_data_directory_in_use_exits_naming_the_holder() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (args, name) in [(SHARD_ARGS, "shard"), (COORDINATOR_ARGS, "coordinator")] {
        let dir = tmp.path().join(name);
        let (mut first, _) = spawn_until_first_line(role(args, &dir));
        let (ok, stderr) = refused(role(args, &dir));
        assert!(!ok, "a second {name} on one directory must not start");
        assert!(
            stderr.contains("is in use by another longbow process")
                && stderr.contains(&format!("pid {}, {name}", first.id())),
            "{stderr}"
        );
        assert!(
            first.try_wait().expect("wait").is_none(),
            "the first keeps running"
        );
        first.kill().expect("kill -9");
        let _ = first.wait();
        let (mut again, _) = spawn_until_first_line(role(args, &dir));
        terminate(&mut again);
    }
}
