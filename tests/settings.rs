//! Settings are really wired: a flag or its `LONGBOW_*` twin changes what the running process
//! does, and a value it cannot honour stops start-up with an error naming the setting.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn shard_cmd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_longbow"));
    cmd.args(["shard", "--listen", "127.0.0.1:0", "--http-port", "0"])
        .arg("--data-dir")
        .arg(dir)
        .env("LONGBOW_LOG", "warn")
        .env_remove("LONGBOW_SIMD");
    cmd
}

#[test]
fn simd_flag_and_its_env_twin_choose_the_kernels_shown_in_metrics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut by_flag = shard_cmd(&tmp.path().join("a"));
    by_flag.args(["--simd", "scalar"]);
    let mut by_env = shard_cmd(&tmp.path().join("b"));
    by_env.env("LONGBOW_SIMD", "scalar");
    let auto = shard_cmd(&tmp.path().join("c"));
    let best = longbow_shard::distance::resolve("auto").expect("auto").isa;

    for (cmd, want) in [(by_flag, "scalar"), (by_env, "scalar"), (auto, best)] {
        let (mut child, line) = spawn_until_first_line(cmd);
        let metrics = http_get(&format!("http://{}", word(&line, "http")), "/metrics");
        let sample = format!("longbow_shard_distance_kernels_info{{isa=\"{want}\"}} 1");
        assert!(metrics.contains(&sample), "want {sample} in:\n{metrics}");
        terminate(&mut child);
    }
}

#[test]
fn a_simd_choice_the_cpu_cannot_run_stops_start_up_naming_the_setting() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = shard_cmd(tmp.path())
        .args(["--simd", "avx9000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run longbow");
    assert!(
        !out.status.success(),
        "an unknown kernel set must not start"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("simd") && stderr.contains("avx9000"),
        "error names the setting and the value: {stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing was served"
    );
}

#[test]
fn a_replica_timeout_shorter_than_the_node_failure_timeout_stops_start_up_naming_both() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = longbow_cmd(COORDINATOR_ARGS, tmp.path())
        .args([
            "--replica-timeout",
            "1",
            "--node-failure-timeout-ms",
            "2000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run longbow");
    assert!(!out.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--replica-timeout-secs") && stderr.contains("--node-failure-timeout-ms"),
        "{stderr}"
    );
}
