//! The install paths against the real control plane: `kubectl apply -k deploy/`, the Helm chart
//! (lint, schema, server-side dry run, install/upgrade/uninstall), the CRD copies, least
//! privilege of the operator's RBAC, and the operator reconciling a Bridge to Ready while
//! authenticated as the ServiceAccount from `deploy/`.
//!
//! `deploy/` uses fixed names (namespace `conclave-system`, ClusterRole `conclave`), so only
//! [`deployed`] applies it, once per test binary. Helm releases use other names and fresh
//! namespaces, and the chart suffixes its cluster-scoped names with the release namespace, so
//! every test here can run in parallel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::operator::Operator;
use common::{cluster, create_tls_secret, kubectl, kubectl_ok, repo};
use conclave::api::{Bridge, Meeting};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use testenv::{ControlPlane, wait_for};

/// Where `deploy/` puts the operator, and its identity.
const SYSTEM_NS: &str = "conclave-system";
const SA_USER: &str = "system:serviceaccount:conclave-system:conclave";
const CRUD: [&str; 7] = ["get", "list", "watch", "create", "patch", "update", "delete"];

/// What the operator may do, resource by resource, anywhere (`resource.group` as
/// `kubectl auth can-i --list` prints it). Written out here independently of the manifests so
/// that a grant added to `deploy/` or the chart fails a test until it is added here too.
fn intended_cluster_grants() -> BTreeSet<(String, String)> {
    let mut grants = BTreeSet::new();
    let mut add = |resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                grants.insert((r.to_string(), v.to_string()));
            }
        }
    };
    add(
        &["bridges.conclave.dev", "meetings.conclave.dev"],
        &["get", "list", "watch"],
    );
    add(
        &["bridges.conclave.dev/status", "meetings.conclave.dev/status"],
        &["get", "patch", "update"],
    );
    add(
        &["bridges.conclave.dev/finalizers", "meetings.conclave.dev/finalizers"],
        &["update"],
    );
    add(&["configmaps", "secrets", "services"], &CRUD);
    add(&["deployments.apps", "statefulsets.apps", "daemonsets.apps"], &CRUD);
    add(
        &["networkpolicies.networking.k8s.io", "ingresses.networking.k8s.io"],
        &CRUD,
    );
    add(&["certificates.cert-manager.io"], &CRUD);
    add(&["nodes", "pods"], &["get", "list", "watch"]);
    // Only cert-manager's Certificate CRD, by name: whether cert-manager is installed.
    add(
        &["customresourcedefinitions.apiextensions.k8s.io[certificates.cert-manager.io]"],
        &["get", "list", "watch"],
    );
    add(&["events", "events.events.k8s.io"], &["create", "patch"]);
    grants
}

/// Leader election, only in the operator's own namespace.
fn intended_lease_grants() -> BTreeSet<(String, String)> {
    // kube-lease-manager reads and writes the Lease; the elector also watches it, so a
    // standby takes over the moment the leader releases it.
    ["get", "list", "watch", "create", "update", "patch"]
        .into_iter()
        .map(|v| ("leases.coordination.k8s.io".to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command with `input` on stdin and returns its output whatever the exit code.
fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command starts");
    // A writer thread: a large input must not deadlock against a child filling its stdout.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("command finishes");
    writer.join().expect("stdin writer").expect("stdin written");
    out
}

fn helm(cp: &ControlPlane, args: &[&str]) -> Output {
    cp.helm().args(args).output().expect("helm runs")
}

fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm(cp, args);
    assert!(out.status.success(), "helm {} failed: {}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart() -> String {
    repo().join("charts/conclave").to_string_lossy().into_owned()
}

fn all_values() -> String {
    repo()
        .join("charts/conclave/ci/all-values.yaml")
        .to_string_lossy()
        .into_owned()
}

/// The `*.yaml` files of a directory, by name, without `kustomization.yaml`.
fn manifests(dir: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), p))
        .collect()
}

/// Asserts that `dir` holds exactly the files of `crds/`, byte for byte.
fn assert_crd_copies(dir: &str) {
    let source = manifests(&repo().join("crds"));
    let copies = manifests(&repo().join(dir));
    assert!(!source.is_empty(), "crds/ has CRDs");
    assert_eq!(
        copies.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>(),
        "{dir} must hold exactly the files of crds/; run: cp crds/*.yaml {dir}/"
    );
    for (name, path) in &source {
        let want = std::fs::read(path).expect("read crds/ file");
        let have = std::fs::read(&copies[name]).expect("read copy");
        assert!(
            want == have,
            "{dir}/{name} differs from crds/{name}; run: cp crds/*.yaml {dir}/"
        );
    }
}

fn yaml_file<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

fn operator_container(d: &Deployment) -> Container {
    let pod = d.spec.template.spec.clone().expect("pod spec");
    pod.containers
        .into_iter()
        .find(|c| c.name == "operator")
        .expect("container operator")
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

fn env_field_ref(c: &Container, name: &str) -> Option<String> {
    let e = c.env.as_ref()?.iter().find(|e| e.name == name)?;
    Some(e.value_from.as_ref()?.field_ref.as_ref()?.field_path.clone())
}

/// The restricted Pod Security profile, plus a read-only root filesystem, for every container.
fn assert_restricted(d: &Deployment, what: &str) {
    let pod = d.spec.template.spec.clone().expect("pod spec");
    let psc = pod.security_context.clone().unwrap_or_default();
    for c in &pod.containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let who = format!("{what}/{}", c.name);
        assert_eq!(
            sc.run_as_non_root.or(psc.run_as_non_root),
            Some(true),
            "{who}: runAsNonRoot"
        );
        let seccomp = sc
            .seccomp_profile
            .clone()
            .or(psc.seccomp_profile.clone())
            .map(|s| s.type_);
        assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{who}: seccomp");
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()]),
            "{who}: drops ALL capabilities"
        );
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.add.clone()).unwrap_or_default(),
            Vec::<String>::new(),
            "{who}: adds no capability"
        );
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{who}: no privilege escalation"
        );
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{who}: read-only root");
        assert_ne!(sc.privileged, Some(true), "{who}: not privileged");
    }
}

/// Asserts the probes, ports, identity env and grace period the operator binary expects.
fn assert_operator_pod(d: &Deployment, what: &str) {
    let c = operator_container(d);
    let pod = d.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.termination_grace_period_seconds, Some(30), "{what}: grace period");
    assert_eq!(c.command, None, "{what}: the image's ENTRYPOINT runs");
    assert_eq!(
        c.args.as_ref().and_then(|a| a.first()).map(String::as_str),
        Some("run"),
        "{what}: runs `conclave run`"
    );
    let port = c.ports.clone().unwrap_or_default();
    assert_eq!(
        port.iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect::<Vec<_>>(),
        vec![(Some("http"), 8080)],
        "{what}: one port, http 8080"
    );
    assert_eq!(env_value(&c, "CONCLAVE_HTTP_ADDRESS").as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(env_field_ref(&c, "POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        env_field_ref(&c, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    for (probe, path) in [
        (c.liveness_probe.clone(), "/healthz"),
        (c.readiness_probe.clone(), "/readyz"),
    ] {
        let get = probe.and_then(|p| p.http_get).expect("HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path), "{what}: probe path");
        assert_eq!(
            serde_json::to_value(&get.port).expect("port"),
            json!("http"),
            "{what}: probe port"
        );
    }
    assert!(
        c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some(),
        "{what}: resource requests"
    );
}

fn labelled_restricted(cp: &ControlPlane, ns: &str) {
    kubectl_ok(
        cp,
        &[
            "label",
            "namespace",
            ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
    );
}

async fn ready_replicas(api: &Api<Deployment>, name: &str, want: i32, timeout: Duration) -> Deployment {
    wait_for(
        &format!("Deployment {name} with {want} ready replicas"),
        timeout,
        || async {
            let d = api.get(name).await.ok()?;
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            let observed = d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation;
            (observed && ready == want).then_some(d)
        },
    )
    .await
}

/// One row of `kubectl auth can-i --list`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    resource: String,
    non_resource_url: String,
    resource_names: String,
    verb: String,
}

/// Parses `kubectl auth can-i --list`: a resource column, then three bracketed lists
/// (non-resource URLs, resource names, verbs); one [`Grant`] per verb.
fn parse_can_i(out: &str) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for line in out.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (resource, rest) = line.split_at(line.find('[').unwrap_or_else(|| panic!("no lists in {line:?}")));
        let mut lists = Vec::new();
        let mut rest = rest;
        while let Some(start) = rest.find('[') {
            let end = start + rest[start..].find(']').expect("closing bracket");
            lists.push(rest[start + 1..end].to_string());
            rest = &rest[end + 1..];
        }
        assert_eq!(lists.len(), 3, "three lists in {line:?}");
        for verb in lists[2].split_whitespace() {
            grants.insert(Grant {
                resource: resource.trim().to_string(),
                non_resource_url: lists[0].clone(),
                resource_names: lists[1].clone(),
                verb: verb.to_string(),
            });
        }
    }
    grants
}

fn can_i_list(cp: &ControlPlane, user: &str, ns: &str) -> BTreeSet<Grant> {
    parse_can_i(&kubectl_ok(cp, &["auth", "can-i", "--list", "--as", user, "-n", ns]))
}

/// What the ServiceAccount may do in `ns` beyond what every ServiceAccount of its namespace
/// may (discovery, self reviews, ... : the baseline is a ServiceAccount with no bindings, so it
/// has the same groups).
fn sa_grants_beyond_baseline(cp: &ControlPlane, ns: &str) -> (BTreeSet<Grant>, BTreeSet<(String, String)>) {
    let all = can_i_list(cp, SA_USER, ns);
    let baseline = can_i_list(cp, "system:serviceaccount:conclave-system:nobody-bound-to-nothing", ns);
    let extra: BTreeSet<(String, String)> = all
        .difference(&baseline)
        .map(|g| {
            assert!(
                g.non_resource_url.is_empty(),
                "no non-resource URLs are granted beyond the defaults: {g:?}"
            );
            (named(&g.resource, &g.resource_names), g.verb.clone())
        })
        .collect();
    (all, extra)
}

/// A resource as the intended grants name it: with its resourceNames in brackets when the
/// grant is limited to some.
fn named(resource: &str, names: &str) -> String {
    if names.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}[{names}]")
    }
}

fn diff(have: &BTreeSet<(String, String)>, want: &BTreeSet<(String, String)>) -> String {
    format!(
        "granted but not intended: {:?}\nintended but not granted: {:?}",
        have.difference(want).collect::<Vec<_>>(),
        want.difference(have).collect::<Vec<_>>()
    )
}

/// Applies `deploy/` (once per test binary) with `kubectl apply -k`, exactly as the README
/// says, and checks that every object was applied.
fn deployed() -> &'static ControlPlane {
    static DONE: OnceLock<()> = OnceLock::new();
    let cp = cluster();
    DONE.get_or_init(|| {
        let out = kubectl_ok(cp, &["apply", "-k", &repo().join("deploy").to_string_lossy()]);
        for object in [
            "namespace/conclave-system",
            "customresourcedefinition.apiextensions.k8s.io/bridges.conclave.dev",
            "customresourcedefinition.apiextensions.k8s.io/meetings.conclave.dev",
            "serviceaccount/conclave",
            "clusterrole.rbac.authorization.k8s.io/conclave",
            "clusterrolebinding.rbac.authorization.k8s.io/conclave",
            "role.rbac.authorization.k8s.io/conclave-leader-election",
            "rolebinding.rbac.authorization.k8s.io/conclave-leader-election",
            "deployment.apps/conclave",
            "service/conclave-metrics",
            "networkpolicy.networking.k8s.io/conclave",
        ] {
            assert!(
                out.contains(object),
                "`kubectl apply -k deploy/` applied {object}:\n{out}"
            );
        }
    });
    cp
}

// ---------------------------------------------------------------------------------------------
// Files that must agree with each other (no cluster needed)

#[test]
fn deploy_crds_equal_crds() {
    assert_crd_copies("deploy/crds");
    // The kustomization lists every copy, so `kubectl apply -k deploy/crds` installs them all.
    let k: serde_json::Value = yaml_file("deploy/crds/kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("string").to_string())
        .collect();
    let files: BTreeSet<String> = manifests(&repo().join("crds")).into_keys().collect();
    assert_eq!(listed, files, "deploy/crds/kustomization.yaml lists every CRD");
}

#[test]
fn chart_crds_equal_crds() {
    assert_crd_copies("charts/conclave/crds");
}

/// The image, the manifests and the chart agree on version, user and entrypoint.
#[test]
fn image_version_and_user_agree() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: serde_json::Value = yaml_file("charts/conclave/Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], version, "chart version = crate version");
    assert_eq!(chart["appVersion"], version, "chart appVersion = crate version");

    let d: Deployment = yaml_file("deploy/operator/deployment.yaml");
    let c = operator_container(&d);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/conclave-dev/conclave:{version}").as_str()),
        "deploy/ runs this version's image"
    );
    let values: serde_json::Value = yaml_file("charts/conclave/values.yaml");
    assert_eq!(values["image"]["repository"], "ghcr.io/conclave-dev/conclave");

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let last = |directive: &str| {
        dockerfile
            .lines()
            .rfind(|l| l.starts_with(directive))
            .map(|l| l[directive.len()..].trim().to_string())
            .unwrap_or_else(|| panic!("Dockerfile has {directive}"))
    };
    assert_eq!(
        last("FROM "),
        "gcr.io/distroless/static-debian12:nonroot",
        "final stage"
    );
    assert_eq!(last("USER "), "65532:65532");
    assert_eq!(last("ENTRYPOINT "), r#"["/conclave"]"#);
    assert_eq!(last("CMD "), r#"["run"]"#);
    let psc = d
        .spec
        .template
        .spec
        .and_then(|p| p.security_context)
        .expect("pod securityContext");
    assert_eq!(
        (psc.run_as_user, psc.run_as_group),
        (Some(65532), Some(65532)),
        "deploy/ runs as the image's user"
    );
    assert_eq!(
        values["podSecurityContext"]["runAsUser"], 65532,
        "the chart runs as the image's user"
    );
    assert_eq!(values["podSecurityContext"]["runAsGroup"], 65532);
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for entry in ["target/", ".git"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore has {entry}");
    }
}

/// values.yaml and values.schema.json describe the same chart-owned settings, and each
/// setting in values.yaml has a comment above it.
#[test]
fn chart_values_are_documented_and_in_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/conclave/values.schema.json")).expect("schema"),
    )
    .expect("schema is JSON");
    let values: serde_json::Value = yaml_file("charts/conclave/values.yaml");
    // Objects the chart defines itself (the others are Kubernetes types passed through, whose
    // defaults set only some fields).
    let owned = [
        "",
        "image",
        "leaderElection",
        "serviceAccount",
        "rbac",
        "metrics",
        "metrics/service",
        "serviceMonitor",
        "networkPolicy",
    ];
    let mut documented = Vec::new();
    for path in owned {
        let mut s = &schema;
        let mut v = &values;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            s = &s["properties"][part];
            v = &v[part];
        }
        assert_eq!(s["additionalProperties"], false, "schema closes {path:?}");
        let in_schema: BTreeSet<&str> = s["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "global")
            .collect();
        let in_values: BTreeSet<&str> = v
            .as_object()
            .expect("values object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(in_schema, in_values, "schema and values.yaml agree at {path:?}");
        for key in in_values {
            let full = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}/{key}")
            };
            if !owned.contains(&full.as_str()) {
                documented.push(full);
            }
        }
    }
    // Each leaf setting: the line before its key is a comment.
    let text = std::fs::read_to_string(repo().join("charts/conclave/values.yaml")).expect("values.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut commented = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        stack.retain(|(n, _)| *n < indent);
        stack.push((indent, key.to_string()));
        let path = stack.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>().join("/");
        if i > 0 && lines[i - 1].trim_start().starts_with('#') {
            commented.insert(path);
        }
    }
    let missing: Vec<&String> = documented.iter().filter(|p| !commented.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "values.yaml settings without a comment: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/

#[tokio::test]
async fn deploy_applies_and_meets_the_restricted_profile() {
    let cp = deployed();
    let client = cp.client().await;

    // Every file on its own is accepted by the API server (each names its namespace).
    for dir in ["deploy/crds", "deploy/operator"] {
        for (name, path) in manifests(&repo().join(dir)) {
            let out = kubectl(cp, &["apply", "--dry-run=server", "-f", &path.to_string_lossy()]);
            assert!(out.status.success(), "{dir}/{name}: {}", text(&out));
        }
    }
    // A GitOps repository can apply the CRDs alone, and the operator alone.
    let crds_only = kubectl_ok(
        cp,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-k",
            &repo().join("deploy/crds").to_string_lossy(),
        ],
    );
    assert_eq!(
        crds_only.lines().count(),
        2,
        "deploy/crds applies the two CRDs and nothing else:\n{crds_only}"
    );
    let operator_only = kubectl_ok(
        cp,
        &[
            "apply",
            "--dry-run=server",
            "-k",
            &repo().join("deploy/operator").to_string_lossy(),
        ],
    );
    assert!(
        !operator_only.contains("customresourcedefinition"),
        "deploy/operator holds no CRDs:\n{operator_only}"
    );

    let ns: Namespace = Api::all(client.clone()).get(SYSTEM_NS).await.expect("namespace");
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    // The label is enforced: a pod without the restricted settings is refused there...
    let refused = kubectl(
        cp,
        &[
            "run",
            "not-restricted",
            "--image=example.invalid/x",
            "-n",
            SYSTEM_NS,
            "--dry-run=server",
        ],
    );
    assert!(
        !refused.status.success() && text(&refused).contains("PodSecurity \"restricted"),
        "a non-restricted pod is refused in {SYSTEM_NS}: {}",
        text(&refused)
    );
    // ...so the operator's pods becoming Ready (kwok runs them) shows they pass admission.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NS);
    let d = ready_replicas(&deployments, "conclave", 2, Duration::from_secs(90)).await;
    assert_restricted(&d, "deploy/ Deployment");
    assert_operator_pod(&d, "deploy/ Deployment");
    let c = operator_container(&d);
    assert_eq!(env_value(&c, "CONCLAVE_LEADER_ELECT").as_deref(), Some("true"));
    assert_eq!(env_value(&c, "CONCLAVE_LOG_FORMAT").as_deref(), Some("json"));
    assert_eq!(
        env_value(&c, "CONCLAVE_CLUSTER_DOMAIN").as_deref(),
        Some("cluster.local")
    );
    assert_eq!(env_value(&c, "CONCLAVE_IPV6").as_deref(), Some("false"));
    assert_eq!(env_value(&c, "CONCLAVE_INITIAL_LIST").as_deref(), Some("auto"));
    assert!(
        c.args
            .clone()
            .unwrap_or_default()
            .contains(&"--lease-name=conclave-operator".to_string()),
        "lease name"
    );
    let pod = d.spec.template.spec.clone().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("conclave"));
    let pod_labels = d
        .spec
        .template
        .metadata
        .clone()
        .and_then(|m| m.labels)
        .unwrap_or_default();

    // The metrics Service reaches the operator's pods on 8080.
    let svc: Service = Api::namespaced(client.clone(), SYSTEM_NS)
        .get("conclave-metrics")
        .await
        .expect("metrics Service");
    let spec = svc.spec.expect("spec");
    let port = &spec.ports.clone().unwrap_or_default()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    let selector = spec.selector.unwrap_or_default();
    assert!(!selector.is_empty());
    assert!(
        selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the Service selects the operator's pods"
    );

    // Default deny with exactly: egress to the API server and DNS, ingress on 8080.
    let np: NetworkPolicy = Api::namespaced(client.clone(), SYSTEM_NS)
        .get("conclave")
        .await
        .expect("NetworkPolicy");
    let spec = np.spec.expect("spec");
    let selects = spec
        .pod_selector
        .clone()
        .and_then(|s| s.match_labels)
        .unwrap_or_default();
    assert!(
        !selects.is_empty() && selects.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the policy selects the operator's pods"
    );
    assert_eq!(
        spec.policy_types.clone().unwrap_or_default(),
        vec!["Ingress".to_string(), "Egress".to_string()]
    );
    let ports = |rules: Vec<(Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>, bool)>| {
        let mut out = BTreeSet::new();
        for (ports, has_peers) in rules {
            assert!(!has_peers, "rules restrict ports, not peers");
            for p in ports.expect("every rule names its ports") {
                out.insert((
                    p.protocol.unwrap_or_else(|| "TCP".into()),
                    serde_json::to_value(p.port).expect("port").to_string(),
                ));
            }
        }
        out
    };
    let egress = ports(
        spec.egress
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.ports, r.to.is_some()))
            .collect(),
    );
    let ingress = ports(
        spec.ingress
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.ports, r.from.is_some()))
            .collect(),
    );
    let set = |items: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(
        egress,
        set(&[("TCP", "443"), ("TCP", "6443"), ("UDP", "53"), ("TCP", "53")])
    );
    assert_eq!(ingress, set(&[("TCP", "8080")]));
}

#[tokio::test]
async fn deploy_rbac_is_least_privilege() {
    let cp = deployed();
    let client = cp.client().await;
    // The binding names the ServiceAccount from deploy/ and nothing else.
    let crb: ClusterRoleBinding = Api::all(client.clone())
        .get("conclave")
        .await
        .expect("ClusterRoleBinding");
    let subjects: Vec<(String, String, Option<String>)> = crb
        .subjects
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.kind, s.name, s.namespace))
        .collect();
    assert_eq!(
        subjects,
        vec![("ServiceAccount".into(), "conclave".into(), Some(SYSTEM_NS.into()))]
    );
    let other_ns = testenv::namespace(&client, "rbac").await;

    let (all, in_system) = sa_grants_beyond_baseline(cp, SYSTEM_NS);
    for g in all.iter().filter(|g| g.non_resource_url.is_empty()) {
        assert!(!g.resource.contains('*') && g.verb != "*", "no wildcard grants: {g:?}");
        assert!(
            !["escalate", "bind", "impersonate"].contains(&g.verb.as_str()),
            "no RBAC escalation: {g:?}"
        );
        if g.resource.starts_with("pods") || g.resource == "nodes" {
            assert!(
                ["get", "list", "watch"].contains(&g.verb.as_str()) && !g.resource.contains('/'),
                "pods and nodes read only, no subresource (pods/exec, pods/eviction): {g:?}"
            );
        }
        if g.resource.contains("customresourcedefinitions") {
            assert!(
                g.resource_names == "certificates.cert-manager.io"
                    && ["get", "list", "watch"].contains(&g.verb.as_str()),
                "on CRDs only reading cert-manager's Certificate CRD: {g:?}"
            );
        }
    }
    let mut want = intended_cluster_grants();
    want.extend(intended_lease_grants());
    assert_eq!(in_system, want, "in {SYSTEM_NS}:\n{}", diff(&in_system, &want));

    // Anywhere else: the same, without leases.
    let (_, elsewhere) = sa_grants_beyond_baseline(cp, &other_ns);
    let want = intended_cluster_grants();
    assert_eq!(elsewhere, want, "in {other_ns}:\n{}", diff(&elsewhere, &want));
}

#[tokio::test]
async fn operator_reconciles_as_its_service_account() {
    let cp = deployed();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "as-sa").await;
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), SYSTEM_NS);
    sa.get("conclave").await.expect("the ServiceAccount from deploy/");

    // A kubeconfig that authenticates with a token the API server issued for the
    // ServiceAccount: the operator gets exactly the ServiceAccount's permissions.
    let token = kubectl_ok(cp, &["create", "token", "conclave", "-n", SYSTEM_NS, "--duration=1h"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": cp.server_url(),
            "certificate-authority": cp.ca_file(),
        }}],
        "users": [{"name": "conclave", "user": {"token": token.trim()}}],
        "contexts": [{"name": "conclave", "context": {"cluster": "testenv", "user": "conclave"}}],
        "current-context": "conclave",
    });
    std::fs::write(&kubeconfig, serde_json::to_vec_pretty(&config).expect("json")).expect("kubeconfig");
    // As deployed: with leader election in the operator's namespace, so the Lease
    // permissions are exercised too.
    let operator = Operator::launch(
        "conclave-as-sa",
        Some(kubeconfig.as_path()),
        &[
            "--leader-elect",
            "--lease-namespace",
            SYSTEM_NS,
            "--lease-name",
            "conclave-as-sa-test",
        ],
        &[],
        None,
    );

    create_tls_secret(&client, &ns, "byo-tls", "meet.example.com").await;
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    let bridge: Bridge = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
        "metadata": {"name": "meet"},
        // TURN at an address of its own, so the Bridge needs no load balancer to be Ready.
        "spec": {"domain": "meet.example.com", "tls": {"secretName": "byo-tls"},
                 "turn": {"host": "198.51.100.30"},
                 "sfu": {"replicas": 1, "media": {"exposure": "NodePort", "port": 31000}}}
    }))
    .expect("bridge");
    bridges
        .create(&PostParams::default(), &bridge)
        .await
        .expect("bridge created");

    wait_for(
        "Bridge Ready under the ServiceAccount",
        Duration::from_secs(120),
        || {
            let bridges = bridges.clone();
            // A missing permission never heals: fail on the first refusal instead of at the deadline.
            let forbidden = operator.lines_containing("forbidden");
            assert_eq!(forbidden, Vec::<String>::new(), "the operator was refused something");
            async move {
                let b = bridges.get("meet").await.ok()?;
                let ready = b
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            }
        },
    )
    .await;

    // A Meeting on it gets its join links under the same identity.
    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let meeting: Meeting = serde_json::from_value(json!({
        "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
        "metadata": {"name": "standup"},
        "spec": {"bridge": "meet", "participants": [{"name": "alice", "moderator": true}]}
    }))
    .expect("meeting");
    meetings
        .create(&PostParams::default(), &meeting)
        .await
        .expect("meeting created");
    wait_for(
        "Meeting Open with links under the ServiceAccount",
        Duration::from_secs(60),
        || {
            let meetings = meetings.clone();
            async move {
                let m = meetings.get("standup").await.ok()?;
                let s = m.status?;
                (s.phase == Some(conclave::api::meeting::Phase::Open) && s.credentials_secret.is_some()).then_some(())
            }
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt("standup-credentials").await.expect("get").is_some());

    // The work was done by the ServiceAccount (not some other identity), and the API server
    // never refused it anything.
    let events = cp.audit_events();
    let by_sa: Vec<&serde_json::Value> = events.iter().filter(|e| e["user"]["username"] == SA_USER).collect();
    assert!(
        by_sa.iter().any(|e| (e["verb"] == "create" || e["verb"] == "patch")
            && e["objectRef"]["resource"] == "deployments"
            && e["objectRef"]["namespace"] == ns.as_str()),
        "the ServiceAccount wrote the Bridge's Deployments"
    );
    let refused: Vec<String> = by_sa
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert_eq!(refused, Vec::<String>::new(), "requests refused to the ServiceAccount");
    assert_eq!(
        operator.lines_containing("forbidden"),
        Vec::<String>::new(),
        "the operator logged no forbidden errors"
    );
}

// ---------------------------------------------------------------------------------------------
// The Helm chart

#[test]
fn chart_lints_clean() {
    let cp = testenv::shared();
    for extra in [None, Some(all_values())] {
        let mut args = vec!["lint", "--strict"];
        let chart = chart();
        args.push(&chart);
        if let Some(values) = &extra {
            args.extend(["-f", values]);
        }
        let out = helm(cp, &args);
        let all = text(&out);
        assert!(out.status.success(), "helm {}: {all}", args.join(" "));
        assert!(all.contains("1 chart(s) linted, 0 chart(s) failed"), "{all}");
        assert!(
            !all.contains("[WARNING]") && !all.contains("[ERROR]"),
            "helm {} is clean: {all}",
            args.join(" ")
        );
    }
}

#[test]
fn chart_schema_rejects_bad_values() {
    let cp = testenv::shared();
    // Control: the defaults render.
    helm_ok(cp, &["template", "conclave-schema", &chart()]);
    for (set, field) in [
        ("replicaCount=-1", "/replicaCount"),
        ("logFormat=xml", "/logFormat"),
        ("replicas=2", "'replicas' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=sha256:0", "'digest' not allowed"),
        ("metrics.service.port=70000", "/metrics/service/port"),
        ("serviceAccount.create=maybe", "/serviceAccount/create"),
        ("podLabels.team=1", "/podLabels/team"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
        ("clusterDomain=Cluster_Local", "/clusterDomain"),
        ("ipv6=maybe", "/ipv6"),
        ("initialList=list", "/initialList"),
        ("serviceMonitor.interval=soon", "/serviceMonitor/interval"),
        ("tolerations[0].operator=Maybe", "/tolerations/0/operator"),
        ("securityContext.runAsNonroot=true", "'runAsNonroot' not allowed"),
    ] {
        for command in ["template", "lint"] {
            let mut args = vec![command];
            if command == "template" {
                args.push("conclave-schema");
            }
            let chart = chart();
            args.extend([chart.as_str(), "--set", set]);
            let out = helm(cp, &args);
            let all = text(&out);
            assert!(!out.status.success(), "helm {command} refuses {set}");
            assert!(
                all.contains("values don't meet the specifications of the schema") && all.contains(field),
                "helm {command} --set {set} names {field}: {all}"
            );
        }
    }
    // A cross-field rule the schema cannot express is checked by the templates.
    let out = helm(
        cp,
        &[
            "template",
            "conclave-schema",
            &chart(),
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("replicaCount > 1 needs leaderElection.enabled"),
        "two replicas without leader election are refused: {}",
        text(&out)
    );
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD (schema-less), so that the
/// chart's ServiceMonitor can be validated by the API server.
fn install_service_monitor_crd(cp: &ControlPlane) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor", "listKind": "ServiceMonitorList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        let mut cmd = cp.kubectl();
        cmd.args(["apply", "--server-side", "-f", "-"]);
        let out = run_with_stdin(cmd, &crd.to_string());
        assert!(out.status.success(), "ServiceMonitor CRD: {}", text(&out));
        kubectl_ok(
            cp,
            &["wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com"],
        );
    });
}

/// `helm template` output, applied with a server-side dry run until discovery knows every
/// kind (a CRD just created takes a moment to appear there).
async fn server_dry_run(cp: &ControlPlane, rendered: &str, what: &str) -> String {
    let mut last = String::new();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut cmd = cp.kubectl();
            cmd.args(["apply", "--dry-run=server", "-f", "-"]);
            let out = run_with_stdin(cmd, rendered);
            last = text(&out);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if !last.contains("ensure CRDs are installed first") {
                panic!("{what}: server-side dry run failed: {last}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    result.unwrap_or_else(|_| panic!("{what}: server-side dry run kept failing: {last}"))
}

#[tokio::test]
async fn chart_template_passes_server_side_dry_run() {
    let cp = cluster();
    let client = cp.client().await;
    install_service_monitor_crd(cp);

    // Defaults, CRDs included.
    let ns = testenv::namespace(&client, "helm-dryrun").await;
    let rendered = helm_ok(
        cp,
        &["template", "conclave-dryrun", &chart(), "-n", &ns, "--include-crds"],
    );
    let out = server_dry_run(cp, &rendered, "default values").await;
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/bridges.conclave.dev".to_string(),
        "serviceaccount/conclave-dryrun".to_string(),
        format!("clusterrole.rbac.authorization.k8s.io/conclave-dryrun-{ns}"),
        format!("clusterrolebinding.rbac.authorization.k8s.io/conclave-dryrun-{ns}"),
        "role.rbac.authorization.k8s.io/conclave-dryrun-leader-election".to_string(),
        "deployment.apps/conclave-dryrun".to_string(),
        "service/conclave-dryrun-metrics".to_string(),
        "networkpolicy.networking.k8s.io/conclave-dryrun".to_string(),
    ] {
        assert!(out.contains(&object), "default values render {object}:\n{out}");
    }
    assert!(!out.contains("servicemonitor"), "no ServiceMonitor by default");

    // Every option set.
    let ns = testenv::namespace(&client, "helm-dryrun-all").await;
    let watched = testenv::namespace(&client, "helm-dryrun-watched").await;
    let rendered = helm_ok(
        cp,
        &[
            "template",
            "conclave-dryrun-all",
            &chart(),
            "-n",
            &ns,
            "-f",
            &all_values(),
            "--set",
            &format!("watchNamespace={watched}"),
        ],
    );
    let out = server_dry_run(cp, &rendered, "ci/all-values.yaml").await;
    for object in [
        "servicemonitor.monitoring.coreos.com/conclave-all-values".to_string(),
        "role.rbac.authorization.k8s.io/conclave-all-values".to_string(),
        "rolebinding.rbac.authorization.k8s.io/conclave-all-values".to_string(),
        format!("clusterrole.rbac.authorization.k8s.io/conclave-all-values-{ns}"),
        "serviceaccount/conclave-operator-sa".to_string(),
        "deployment.apps/conclave-all-values".to_string(),
    ] {
        assert!(out.contains(&object), "all values render {object}:\n{out}");
    }
    assert!(
        rendered.contains(&format!("namespace: {watched}")),
        "the watched namespace gets the Role"
    );
}

fn rules_of(rules: Option<Vec<PolicyRule>>) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for r in rules.unwrap_or_default() {
        for g in r.api_groups.clone().unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    // As `kubectl auth can-i --list` prints them: `bridges.conclave.dev/status`.
                    let (base, sub) = res
                        .split_once('/')
                        .map_or((res.as_str(), String::new()), |(b, s)| (b, format!("/{s}")));
                    let name = if g.is_empty() {
                        res.clone()
                    } else {
                        format!("{base}.{g}{sub}")
                    };
                    let names = r.resource_names.clone().unwrap_or_default().join(" ");
                    out.insert((named(&name, &names), v.clone()));
                }
            }
        }
    }
    out
}

fn can(cp: &ControlPlane, user: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let out = kubectl(cp, &["auth", "can-i", verb, resource, "-n", ns, "--as", user]);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn chart_install_upgrade_uninstall() {
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "helm-life").await;
    let watched = testenv::namespace(&client, "helm-life-watched").await;
    labelled_restricted(cp, &ns);
    let release = "conclave-life";
    let cluster_name = format!("{release}-{ns}");
    let user = format!("system:serviceaccount:{ns}:{release}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_uid = crds.get("bridges.conclave.dev").await.expect("CRD").metadata.uid;

    // Install: the pods pass the restricted profile (--wait needs them Ready).
    let notes = helm_ok(
        cp,
        &["install", release, &chart(), "-n", &ns, "--wait", "--timeout", "120s"],
    );
    assert!(
        notes.contains("kubectl get br") && notes.contains("kind: Bridge"),
        "NOTES tell what to do next:\n{notes}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = ready_replicas(&deployments, release, 2, Duration::from_secs(60)).await;
    assert_restricted(&d, "chart Deployment");
    assert_operator_pod(&d, "chart Deployment");
    let c = operator_container(&d);
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/conclave-dev/conclave:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    // An empty value (every namespace) comes back from the API server as no value at all.
    assert!(
        c.env.iter().flatten().any(|e| e.name == "CONCLAVE_WATCH_NAMESPACE"),
        "CONCLAVE_WATCH_NAMESPACE is set"
    );
    assert_eq!(env_value(&c, "CONCLAVE_WATCH_NAMESPACE").unwrap_or_default(), "");
    assert_eq!(env_value(&c, "CONCLAVE_LEADER_ELECT").as_deref(), Some("true"));
    assert_eq!(
        env_value(&c, "CONCLAVE_CLUSTER_DOMAIN").as_deref(),
        Some("cluster.local")
    );
    assert_eq!(env_value(&c, "CONCLAVE_IPV6").as_deref(), Some("false"));
    assert_eq!(env_value(&c, "CONCLAVE_INITIAL_LIST").as_deref(), Some("auto"));
    let labels = d.metadata.labels.clone().unwrap_or_default();
    for key in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ] {
        assert!(labels.contains_key(key), "Deployment has label {key}");
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.get(release).await.expect("ServiceAccount");
    Api::<Service>::namespaced(client.clone(), &ns)
        .get(&format!("{release}-metrics"))
        .await
        .expect("metrics Service");
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(release)
        .await
        .expect("NetworkPolicy");
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let cr = cluster_roles.get(&cluster_name).await.expect("ClusterRole");
    let want = intended_cluster_grants();
    let have = rules_of(cr.rules);
    assert_eq!(have, want, "the chart's ClusterRole:\n{}", diff(&have, &want));
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let lease_role = roles
        .get(&format!("{release}-leader-election"))
        .await
        .expect("leader election Role");
    assert_eq!(rules_of(lease_role.rules), intended_lease_grants());
    assert!(
        can(cp, &user, "list", "bridges.conclave.dev", &watched),
        "cluster-wide before the upgrade"
    );

    // Upgrade: more replicas, an extra pod label, one watched namespace.
    helm_ok(
        cp,
        &[
            "upgrade",
            release,
            &chart(),
            "-n",
            &ns,
            "--set",
            "replicaCount=3",
            "--set",
            "podLabels.team=video",
            "--set",
            &format!("watchNamespace={watched}"),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    let d = ready_replicas(&deployments, release, 3, Duration::from_secs(60)).await;
    let pod_labels = d
        .spec
        .template
        .metadata
        .clone()
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(pod_labels.get("team").map(String::as_str), Some("video"));
    assert_eq!(
        env_value(&operator_container(&d), "CONCLAVE_WATCH_NAMESPACE").as_deref(),
        Some(watched.as_str())
    );
    // Cluster-wide only nodes and the CRD remain; the rest moved into a Role in the watched
    // namespace.
    let cr = cluster_roles.get(&cluster_name).await.expect("ClusterRole");
    let cluster_scoped = |r: &str| r == "nodes" || r.starts_with("customresourcedefinitions");
    let mut cluster_only = intended_cluster_grants();
    cluster_only.retain(|(r, _)| cluster_scoped(r));
    assert_eq!(
        rules_of(cr.rules),
        cluster_only,
        "watchNamespace leaves only nodes and cert-manager's CRD cluster-wide"
    );
    let watched_role: Role = Api::namespaced(client.clone(), &watched)
        .get(release)
        .await
        .expect("Role in the watched namespace");
    let mut namespaced = intended_cluster_grants();
    namespaced.retain(|(r, _)| !cluster_scoped(r));
    assert_eq!(rules_of(watched_role.rules), namespaced);
    Api::<RoleBinding>::namespaced(client.clone(), &watched)
        .get(release)
        .await
        .expect("RoleBinding in the watched namespace");
    assert!(
        can(cp, &user, "list", "bridges.conclave.dev", &watched),
        "watched namespace"
    );
    assert!(
        can(cp, &user, "create", "deployments.apps", &watched),
        "watched namespace"
    );
    assert!(
        !can(cp, &user, "list", "bridges.conclave.dev", "default"),
        "not elsewhere"
    );
    assert!(can(cp, &user, "watch", "nodes", "default"), "nodes stay readable");

    // Uninstall: everything the release made is gone, the CRDs stay (Helm never deletes them).
    helm_ok(cp, &["uninstall", release, "-n", &ns, "--wait", "--timeout", "120s"]);
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let watched_roles: Api<Role> = Api::namespaced(client.clone(), &watched);
    wait_for(
        "the release's objects to be deleted",
        Duration::from_secs(60),
        || async {
            let gone = deployments.get_opt(release).await.ok()?.is_none()
                && sas.get_opt(release).await.ok()?.is_none()
                && cluster_roles.get_opt(&cluster_name).await.ok()?.is_none()
                && cluster_bindings.get_opt(&cluster_name).await.ok()?.is_none()
                && roles
                    .get_opt(&format!("{release}-leader-election"))
                    .await
                    .ok()?
                    .is_none()
                && watched_roles.get_opt(release).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    // Pods go through the garbage collector after their Deployment, hence a wait here too.
    let selector = format!("app.kubernetes.io/instance={release}");
    wait_for(
        "nothing labelled with the release is left",
        Duration::from_secs(60),
        || {
            let left = kubectl_ok(
                cp,
                &[
                    "get",
                    "all,networkpolicy,rolebinding",
                    "-n",
                    &ns,
                    "-l",
                    &selector,
                    "-o",
                    "name",
                ],
            );
            async move { left.trim().is_empty().then_some(()) }
        },
    )
    .await;
    for name in ["bridges.conclave.dev", "meetings.conclave.dev"] {
        let crd = crds
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} stays after uninstall: {e}"));
        if name == "bridges.conclave.dev" {
            assert_eq!(
                crd.metadata.uid, crd_uid,
                "the same CRD object, never deleted and recreated"
            );
        }
    }
    assert!(
        !helm_ok(cp, &["list", "-n", &ns, "-q"]).contains(release),
        "helm no longer lists the release"
    );
}
