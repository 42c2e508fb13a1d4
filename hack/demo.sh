#!/usr/bin/env bash
# The demo: start a local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok), install Conclave's CRDs, run the operator, apply examples/, show the
# result, and leave the control plane and the operator running.
set -euo pipefail
cd "$(dirname "$0")/.."

state=${CONCLAVE_DEMO_DIR:-${TMPDIR:-/tmp}/conclave-demo}
mkdir -p "$state"

echo "==> building (first run on a fresh machine: the control plane is built from source, ~10 min)"
bin=$(bash tests/tools/build.sh)
cargo build --quiet --workspace --bins
kubectl=("$bin/kubectl" --kubeconfig "$state/kubeconfig")

if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null && [[ -f "$state/ready" ]]; then
  echo "==> reusing the control plane already running (pid $(cat "$state/pid"))"
else
  rm -f "$state/ready" "$state/kubeconfig"
  echo "==> starting the control plane (logs in $state)"
  setsid nohup target/debug/testenv up --state-dir "$state" >"$state/testenv.log" 2>&1 &
  echo $! >"$state/pid"
  for _ in $(seq 1 600); do
    [[ -f "$state/ready" ]] && break
    kill -0 "$(cat "$state/pid")" 2>/dev/null || { tail -20 "$state/testenv.log"; exit 1; }
    sleep 0.2
  done
  [[ -f "$state/ready" ]] || { echo "control plane not ready after 120s" >&2; tail -20 "$state/testenv.log"; exit 1; }
fi

echo "==> installing CRDs"
"${kubectl[@]}" apply --server-side -f crds/
"${kubectl[@]}" wait --for=condition=Established --timeout=60s crd/bridges.conclave.dev crd/meetings.conclave.dev

if [[ -f "$state/operator.pid" ]] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
  kill "$(cat "$state/operator.pid")" 2>/dev/null || true
fi
echo "==> starting the operator (log in $state/operator.log)"
KUBECONFIG="$state/kubeconfig" setsid nohup target/debug/conclave run --log-format text \
  --http-address 127.0.0.1:0 >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"

echo "==> applying examples/"
"${kubectl[@]}" apply --server-side -f examples/
"${kubectl[@]}" wait --for=jsonpath='{.status.observedGeneration}'=1 --timeout=60s bridge/meet bridge/conference bridge/live

echo "==> waiting for Bridge meet to be Ready (its certificate comes from Conclave's own CA)"
"${kubectl[@]}" wait --for=condition=Ready --timeout=180s bridge/meet
"${kubectl[@]}" wait --for=jsonpath='{.status.phase}'=Open --timeout=60s meeting/team-room

echo "==> kubectl get br,mtg"
"${kubectl[@]}" get br,mtg
echo "==> what the operator made for Bridge meet"
"${kubectl[@]}" get deploy,sts,svc,cm,networkpolicy -l app.kubernetes.io/instance=meet
echo "==> conditions of Bridge meet"
"${kubectl[@]}" get bridge meet -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'

echo "==> join links of Meeting team-room (a standing room; tokens valid 24h, re-issued before they expire)"
for key in $("${kubectl[@]}" get secret team-room-credentials -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}'); do
  printf '  %-8s %s\n' "$key" "$("${kubectl[@]}" get secret team-room-credentials -o "jsonpath={.data.$key}" | base64 -d)"
done
echo "==> Meeting weekly-sync is Scheduled for 2030; its links exist already, valid from 10 minutes before the start:"
"${kubectl[@]}" get secret weekly-sync-credentials -o go-template='{{range $k, $v := .data}}  {{$k}}{{"\n"}}{{end}}'
echo "==> waiting for the LiveKit Bridge live to be Ready"
"${kubectl[@]}" wait --for=condition=Ready --timeout=180s bridge/live
"${kubectl[@]}" wait --for=jsonpath='{.status.phase}'=Scheduled --timeout=60s meeting/design-review
echo "==> join links of the LiveKit Meeting design-review: the token in the query, the room's E2EE passphrase in the fragment"
for key in $("${kubectl[@]}" get secret design-review-credentials -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}'); do
  printf '  %-8s %s\n' "$key" "$("${kubectl[@]}" get secret design-review-credentials -o "jsonpath={.data.$key}" | base64 -d)"
done
echo "==> what the operator made for the LiveKit Bridge live"
"${kubectl[@]}" get deploy,sts,svc,cm -l app.kubernetes.io/instance=live
echo "==> what 'conclave render' shows a reviewer for examples/bridge.yaml (first lines)"
target/debug/conclave render -f examples/bridge.yaml -f examples/meeting.yaml | head -20

cat <<MSG

The control plane keeps running.
  export KUBECONFIG=$state/kubeconfig
  $bin/kubectl get br,mtg
Stop it with: kill $(cat "$state/operator.pid") $(cat "$state/pid")
MSG
