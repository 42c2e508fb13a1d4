//! A control-plane component down and back under a running operator, as the chaos test sees
//! it: how long the API took to come back, what `/healthz` answered meanwhile, and how long a
//! Meeting created afterwards waited for its links.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::common::operator::{Operator, http_get};
use crate::workload::{Model, Op};
use crate::{LINKS_AFTER_OUTAGE, invariants, workload};

/// One outage, as seen from outside.
#[derive(Debug)]
pub struct Outage {
    pub component: &'static str,
    pub down: Duration,
    /// Time from the component's start until the API server was ready again.
    pub back_after: Duration,
    /// `/healthz` answers during the outage and until the probe Meeting had its links.
    pub healthz: BTreeMap<u16, usize>,
    /// Time from ready until a Meeting created then had its links (None: not within the wait).
    pub links_after: Option<Duration>,
    /// Without links within the wait: the same measured on, until the next SIGKILL of the
    /// operator (which ends the measurement: a fresh operator has fresh watches).
    pub late: Option<Late>,
}

#[derive(Debug)]
pub struct Late {
    ready: Instant,
    found: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    task: tokio::task::JoinHandle<()>,
    /// When the operator was killed next, after `ready`, with no links by then.
    cut: Option<Duration>,
}

impl Late {
    pub fn cut(&mut self) {
        if self.cut.is_none() && self.found().is_none() {
            self.cut = Some(self.ready.elapsed());
        }
        self.task.abort();
    }

    fn found(&self) -> Option<Duration> {
        *self.found.lock().expect("lock")
    }
}

impl Outage {
    pub fn links(&self) -> String {
        match (&self.links_after, &self.late) {
            (Some(d), _) => format!("{d:.1?}"),
            (None, Some(late)) => match (late.found(), late.cut) {
                (Some(d), _) => format!("{d:.1?} (more than {LINKS_AFTER_OUTAGE:?})"),
                (None, Some(d)) => format!("none yet {d:.1?} after, when the operator was killed next"),
                (None, None) => "none by the end".into(),
            },
            (None, None) => "?".into(),
        }
    }
}

/// Kills `component`, keeps it down for `down` while the operator runs on, starts it again,
/// then creates the probe Meeting and waits (at most [`LINKS_AFTER_OUTAGE`]) for its links,
/// watching the operator's `/healthz` all along.
pub async fn restart(
    cp: &'static testenv::ControlPlane,
    client: &kube::Client,
    operator: &Operator,
    model: &Model,
    component: &'static str,
    down: Duration,
    probe: &Op,
) -> Outage {
    let port = operator.http_port().await;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let healthz = {
        let watching = watching.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let code = http_get(port, "/healthz").map(|(c, _)| c).unwrap_or(0);
                *seen.entry(code).or_default() += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            seen
        })
    };
    let started = tokio::task::spawn_blocking(move || {
        cp.stop_component(component, Duration::ZERO).expect("stop");
        std::thread::sleep(down);
        let started = Instant::now();
        cp.start_component(component, Duration::from_secs(120)).expect("start");
        started.elapsed()
    })
    .await
    .expect("restart thread");
    let ready = Instant::now();
    workload::apply(client, model, probe).await;
    let Op::CreateMeeting(name) = probe else {
        panic!("the probe is a new Meeting")
    };
    let mut links_after = None;
    while ready.elapsed() < LINKS_AFTER_OUTAGE {
        if invariants::has_links(client, model, name).await {
            links_after = Some(ready.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let late = links_after.is_none().then(|| {
        let found = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (client, model_ns, name, slot) = (client.clone(), model.namespace.clone(), name.clone(), found.clone());
        let task = tokio::spawn(async move {
            let secrets: Api<Secret> = Api::namespaced(client, &model_ns);
            let creds = format!("{name}-credentials");
            while !matches!(secrets.get_opt(&creds).await, Ok(Some(_))) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            *slot.lock().expect("lock") = Some(ready.elapsed());
        });
        Late {
            ready,
            found,
            task,
            cut: None,
        }
    });
    Outage {
        component,
        down,
        back_after: started,
        healthz: healthz.await.expect("healthz thread"),
        links_after,
        late,
    }
}
