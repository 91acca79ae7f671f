//! Child processes that never outlive the test process.
//!
//! Each server runs in its own process group (so stopping it stops anything it spawned) and
//! with `PR_SET_PDEATHSIG = SIGKILL`, so a test process that dies without running destructors
//! (a panic with `abort`, a runner's timeout kill) takes its servers with it. The kernel sends
//! that signal when the *thread* that forked the child exits, so all children are forked by one
//! spawner thread that lives as long as the process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::SupportError;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vibe-test-support-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    })
}

/// A running server process with its output going to a log file.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    server: &'static str,
    child: Option<Child>,
    log: PathBuf,
    /// Where this run's output starts in the (appended) log file.
    log_start: u64,
}

impl ServerProcess {
    /// Starts `program args…` in `cwd`, appending stdout and stderr to `log`.
    pub(crate) fn spawn(
        server: &'static str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        cwd: &Path,
        log: &Path,
    ) -> Result<Self, SupportError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(SupportError::io(format!("open {}", log.display())))?;
        let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
        let err = out
            .try_clone()
            .map_err(SupportError::io(format!("open {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(envs.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        configure_lifetime(&mut command);

        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((command, reply_tx))
            .expect("the spawner thread lives as long as the process");
        let child = reply_rx
            .recv()
            .expect("the spawner thread always replies")
            .map_err(SupportError::io(format!("start {}", program.display())))?;
        tracing::debug!(server, pid = child.id(), "started");
        Ok(Self {
            server,
            child: Some(child),
            log: log.to_path_buf(),
            log_start,
        })
    }

    /// The process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Err` with the log's tail when the process has already ended.
    pub(crate) fn check_alive(&mut self) -> Result<(), SupportError> {
        let Some(child) = self.child.as_mut() else {
            return Err(SupportError::Request {
                server: self.server,
                message: "the server is stopped".into(),
            });
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(SupportError::Exited {
                    server: self.server,
                    status: status.to_string(),
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                })
            }
            Err(source) => Err(SupportError::Io {
                action: "check the server process".into(),
                source,
            }),
        }
    }

    /// The last lines this run wrote to its log.
    pub(crate) fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.log_start)
            .unwrap_or(0)
            .min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `probe` until it answers `true`; fails early when the process ends, or after
    /// `timeout`.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(), SupportError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if probe().await {
                tracing::debug!(server = self.server, waited = ?started.elapsed(), "ready");
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(SupportError::NotReady {
                    server: self.server,
                    waited: started.elapsed(),
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the process group to terminate, then kills it after `grace`; waits until it is gone.
    pub(crate) async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_group(&child, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        kill_and_reap(&mut child);
    }

    /// Kills the process group at once (a crash, as far as the server can tell).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_and_reap(child: &mut Child) {
    // Signal the group before reaping the leader: until then its id cannot be reused.
    signal_group(child, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: killpg only sends a signal; the group is the one this child leads (process_group(0)).
    unsafe {
        libc::killpg(pgid, signal);
    }
}

#[cfg(target_os = "linux")]
fn configure_lifetime(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe and called before the fork.
    let parent = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn configure_lifetime(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}
