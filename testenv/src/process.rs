//! Child processes that cannot outlive the process that started them.
//!
//! Every component is spawned with `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it when
//! its parent goes away, even if the parent is SIGKILLed or a test aborts. The catch: the
//! "parent" for PDEATHSIG is the *thread* that forked, not the process, and the Rust test
//! harness runs each test on a thread that exits when the test ends. A control plane started
//! from a test thread would be killed as soon as that test finished. So all forks happen on
//! one dedicated spawner thread that lives as long as the process.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// The spawner thread's inbox. Kept in a static so the sender is never dropped and the
/// thread never leaves its receive loop before the process exits.
static SPAWNER: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();

fn spawner() -> Result<&'static mpsc::Sender<Job>, Error> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("testenv-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        // The requester may have given up; nothing to do then.
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("starting the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| Error::Other(e.clone()))
}

/// Spawns `cmd` from the spawner thread with PDEATHSIG armed.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // If the parent died between fork and prctl, the signal will never come.
            // (ESRCH rather than a custom message: allocating after fork is not safe.)
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .map_err(io::Error::other)?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.recv().map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// One running component, with what it takes to start it again.
pub(crate) struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Proc {
    /// Starts `program args...` with stdin closed and stdout+stderr written to `log` (a fresh
    /// file).
    pub fn start(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Proc, Error> {
        let out = File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        Proc::launch(name, program, args, log, out)
    }

    /// Starts the same program with the same arguments again, appending to its log.
    pub fn restart(&self) -> Result<Proc, Error> {
        let out = File::options()
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))?;
        Proc::launch(&self.name, &self.program, &self.args, self.log.clone(), out)
    }

    fn launch(name: &str, program: &Path, args: &[String], log: PathBuf, out: File) -> Result<Proc, Error> {
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", log.display()), e))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = spawn(cmd).map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        tracing::debug!(component = name, pid = child.id(), "started");
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            program: program.to_path_buf(),
            args: args.to_vec(),
        })
    }

    /// `Err` with the log tail if the process has exited.
    pub fn check(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                component: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, 40),
            }),
            Err(e) => Err(Error::io(format!("checking on {}", self.name), e)),
        }
    }
}

/// The last `lines` lines of a log file (best effort: a missing file yields a note).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we own and have not reaped yet (callers only signal
    // children whose try_wait returned None, so the pid cannot have been recycled).
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Stops processes: SIGTERM to all, then SIGKILL to whatever is still alive after `grace`,
/// and reaps every one (so no zombie or stray pid is left behind).
pub(crate) fn terminate(procs: &mut [Proc], grace: Duration) {
    for p in procs.iter_mut() {
        if matches!(p.child.try_wait(), Ok(None)) {
            signal(&p.child, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = 0;
        for p in procs.iter_mut() {
            if matches!(p.child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs.iter_mut() {
        if matches!(p.child.try_wait(), Ok(None)) {
            tracing::debug!(component = %p.name, "did not stop after SIGTERM, killing");
            signal(&p.child, libc::SIGKILL);
        }
        // Reap; after SIGKILL this returns promptly.
        let _ = p.child.wait();
    }
}
