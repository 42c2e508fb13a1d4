//! Stopping and starting components of a running control plane, for fault tests: an API server
//! or etcd that goes away and comes back on the same port with the same data, so every
//! kubeconfig (and every client the tests and the operator hold) keeps working.

use std::time::{Duration, Instant};

use crate::controlplane::{ControlPlane, client_from, lock};
use crate::{Error, process};

/// Components a node's kubelet would restart when they exit, as it restarts static pods.
/// kube-scheduler exits on purpose when it finds its cache corrupted, which a kube-apiserver
/// SIGKILL in the middle of a pod's binding can cause ("Pod updated on a different node than
/// previously added to"); without a restart nothing is scheduled again.
const SUPERVISED: [&str; 3] = ["kube-scheduler", "kube-controller-manager", "kwok"];

/// How often the supervisor looks for an exited component (the kubelet's first restart of a
/// crashed container comes after about as long).
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

impl ControlPlane {
    /// Restarts supervised components that exited on their own, for as long as the process
    /// runs. Components stopped by [`ControlPlane::stop_component`] are not in `procs` and stay
    /// stopped; at teardown `procs` is emptied under its lock, so nothing comes back.
    pub(crate) fn supervise(&self) {
        loop {
            std::thread::sleep(SUPERVISE_EVERY);
            let mut procs = lock(&self.procs);
            for p in procs.iter_mut().filter(|p| SUPERVISED.contains(&p.name.as_str())) {
                let Ok(Some(status)) = p.child.try_wait() else {
                    continue;
                };
                match p.restart() {
                    Ok(new) => {
                        eprintln!(
                            "testenv: {} exited ({status}); restarted it, as a kubelet would (log: {})",
                            p.name,
                            p.log.display()
                        );
                        lock(&self.pids).push(new.child.id());
                        *p = new;
                    }
                    Err(e) => eprintln!("testenv: {} exited ({status}) and could not be restarted: {e}", p.name),
                }
            }
        }
    }

    /// Stops component `name` (`etcd`, `kube-apiserver`, ...): SIGTERM, then SIGKILL after
    /// `grace` (`Duration::ZERO`: SIGKILL at once, as a crash). It stays stopped until
    /// [`ControlPlane::start_component`].
    pub fn stop_component(&self, name: &str, grace: Duration) -> Result<(), Error> {
        let mut procs = lock(&self.procs);
        let at = procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error::Other(format!("{name} is not running")))?;
        process::terminate(std::slice::from_mut(&mut procs[at]), grace);
        let proc = procs.remove(at);
        lock(&self.stopped).push((at, proc));
        tracing::info!(component = name, "stopped");
        Ok(())
    }

    /// Starts a component stopped by [`ControlPlane::stop_component`] again, with the same
    /// binary, arguments, port and data (its log continues), and waits until the API server's
    /// `/readyz` passes (for etcd that means the API server reaches it again), at most
    /// `timeout`.
    pub fn start_component(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let (at, old) = {
            let mut stopped = lock(&self.stopped);
            let i = stopped
                .iter()
                .position(|(_, p)| p.name == name)
                .ok_or_else(|| Error::Other(format!("{name} was not stopped")))?;
            stopped.remove(i)
        };
        let proc = old.restart()?;
        lock(&self.pids).push(proc.child.id());
        {
            let mut procs = lock(&self.procs);
            let at = at.min(procs.len());
            procs.insert(at, proc);
        }
        tracing::info!(component = name, "started again");
        self.wait_ready(Instant::now() + timeout)
    }

    /// Stops component `name` (SIGKILL when `crash`, else SIGTERM with a 10 s grace), keeps it
    /// down for `down`, starts it again and waits until the control plane is ready (at most
    /// 120 s). Blocks the calling thread.
    pub fn restart_component(&self, name: &str, down: Duration, crash: bool) -> Result<(), Error> {
        let grace = if crash { Duration::ZERO } else { Duration::from_secs(10) };
        self.stop_component(name, grace)?;
        std::thread::sleep(down);
        self.start_component(name, Duration::from_secs(120))
    }

    /// Waits until kube-apiserver's `/readyz` passes (it checks etcd too).
    fn wait_ready(&self, deadline: Instant) -> Result<(), Error> {
        let kubeconfig = self.kubeconfig().to_path_buf();
        self.block_on(async {
            let admin = client_from(&kubeconfig).await?;
            self.until("kube-apiserver /readyz after a restart", deadline, || {
                let admin = admin.clone();
                async move {
                    let req = kube::core::Request::new("")
                        .get("readyz", &Default::default())
                        .map_err(|e| e.to_string())?;
                    admin.request_text(req).await.map_err(|e| e.to_string())
                }
            })
            .await
            .map(|_| ())
        })
    }
}
