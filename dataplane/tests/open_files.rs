//! Every WebSocket and live sync feed holds a file descriptor: started with the usual soft
//! limit far below the hard one, `vibe-dataplane` raises its soft open-file limit to the
//! hard limit.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `(soft, hard)` "Max open files" of a process (Linux `/proc/<pid>/limits`).
fn open_file_limits(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    // The shell lowers only the soft limit, then becomes the data plane (same pid).
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0""#,
            env!("CARGO_BIN_EXE_vibe-dataplane"),
        ])
        .env_clear();
    let mut child = common::offline_binary_env(&mut command)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vibe-dataplane");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let raised = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "vibe-dataplane exited early"
        );
        last = open_file_limits(pid).or(last);
        if let Some((soft, hard)) = &last
            && soft != "256"
        {
            break (soft.clone(), hard.clone());
        }
        if Instant::now() > deadline {
            break last.clone().expect("limits readable");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let (soft, hard) = raised;
    assert_eq!(soft, hard, "soft open-file limit raised to the hard limit");
}
