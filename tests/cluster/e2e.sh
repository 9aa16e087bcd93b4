#!/usr/bin/env bash
# `make test-cluster` (issue 17): Ray's cluster launcher end to end, as a user runs it, on one machine.
#
# Three "machines" on loopback addresses, each in its own network namespace, joined by a bridge:
#   127.0.0.4  the user's machine: runs the README's cluster session (`ray up`, `ray exec`, `ray submit`,
#              `ray down`) with the repository's cluster.yaml rendered for these IPs, user root and a key
#   127.0.0.2  head, 127.0.0.3 worker: sshd as PID 1 of their own PID/mount/UTS namespaces, own /root and
#              /tmp (so `ray stop` on one cannot see the other's Ray), and /mnt/nfs bound to one directory
#              on both, as an NFS mount would be.
# Asserts: the guard refuses a node-local storage_path (exit 2, one line); the README's submit runs trials
# on both node IPs, all completed, every MLflow child run FINISHED under one parent on the head's server;
# the worker has no stray mlflow.db; after `ray down` no Ray process is left on either node.
# Needs root, iproute2, util-linux, openssh-server, rsync, curl and the project's .venv (`make install`).
# Nothing is left running: namespaces, sshd and Ray die with the PID-1 processes, on any exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=${VENV:-$ROOT/.venv}
T=${RAYNAS_E2E_DIR:-/var/tmp/raynas-e2e}
NS=raynas-e2e
CLIENT=127.0.0.4 HEAD=127.0.0.2 WORKER=127.0.0.3
NFS_MOUNT=/mnt/nfs
README_HEAD_IP=10.0.0.10   # the head's address in the README's session block
T0=${E2E_T0:-$(date +%s)}

say() { echo "e2e: $* ($(( $(date +%s) - T0 )) s)"; }
die() { echo "e2e: FAIL: $*" >&2; exit 1; }

# ----------------------------------------------------------------------------- inside the client namespace
# The README's session block, run by bash as it stands (head IP replaced); `ray` is wrapped to time each
# step and to add the checks between steps.
ray() {
  local step=$1 t=$SECONDS
  if [ "$step" = submit ]; then guard_refuses_local_storage; fi
  command ray "$@"
  say "ray $step done in $(( SECONDS - t )) s"
  if [ "$step" = submit ]; then
    "$VENV/bin/python" "$HERE/check.py" "$T/head/home/raynas/runs/quickstart/summary.json" \
      "http://$HEAD:5000" quickstart "$HEAD" "$WORKER"
  fi
}

guard_refuses_local_storage() {   # the default storage_path, ~/raynas/runs/..., is on the head's disk only
  local log=$T/guard.log t=$SECONDS
  if command ray submit cluster.yaml run.py -- experiments/quickstart.yaml --out runs/guard \
      --tracking-uri "http://$HEAD:5000" > "$log" 2>&1; then
    die "ray submit with a node-local storage_path exited 0 (see $log)"
  fi
  grep -q "raynas: error: storage_path /root/raynas/runs/guard/ray_results is not shared: node(s) $WORKER" "$log" \
    || { tail -n 30 "$log"; die "the guard's one-line refusal is missing from $log"; }
  [ ! -e "$T/head/home/raynas/runs/guard/experiment.json" ] || die "the refused run still started (experiment.json)"
  say "guard: node-local storage_path refused before any trial ($(( SECONDS - t )) s)"
}

session() {
  cd "$T/client/project"
  local block
  block=$(awk '/<!-- make test-cluster runs this block/{f=1; next} f && /^```bash/{g=1; next} g && /^```/{exit} g' \
    README.md)
  [ -n "$block" ] || die "README.md has no cluster session block"
  say "running the README's cluster session:"; echo "$block" | sed 's/^/    /'
  eval "${block//$README_HEAD_IP/$HEAD}"
}

if [ "${1:-}" = --session ]; then
  session
  exit 0
fi

# ------------------------------------------------------------------------------------------ on the host
nodes_ps() {   # Ray processes left in node $1's PID namespace
  local pid1
  pid1=$(cat "$T/$1/pid1" 2>/dev/null) || return 0
  nsenter -t "$pid1" -p -m ps -eo pid=,stat=,args= 2>/dev/null \
    | grep -E 'raylet|gcs_server|ray::|default_worker|ray/_private|ray/autoscaler|ray/dashboard' || true
}

in_ns() {   # NAME NETNS CMD...: CMD as PID 1 of new PID, mount and UTS namespaces in NETNS, in the background
  local name=$1 netns=$2
  shift 2
  setsid ip netns exec "$netns" unshare --pid --mount --uts --fork --kill-child --mount-proc --propagation private \
    "$@" > "$T/$name/ns.log" 2>&1 < /dev/null &
  echo $! > "$T/$name/unshare.pid"
  for _ in 1 2 3 4 5 6 7 8 9 10; do pgrep -P $! > "$T/$name/pid1" && return 0; sleep 0.2; done
  die "$name did not start: $(cat "$T/$name/ns.log")"
}

cleanup() {   # SIGKILL to a PID namespace's PID 1 ends every process in it (unshare ignores SIGTERM)
  local rc=$? pid
  for n in client head worker; do
    for f in pid1 unshare.pid; do
      pid=$(cat "$T/$n/$f" 2>/dev/null) || continue
      if grep -qa "$T" "/proc/$pid/cmdline" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      rm -f "$T/$n/$f"
    done
  done
  sleep 1
  for n in lan head worker; do ip netns del "$NS-$n" 2>/dev/null || true; done
  [ -f "$T/made_nfs_mount" ] && rmdir "$NFS_MOUNT" 2>/dev/null && rm -f "$T/made_nfs_mount"
  if [ "$rc" = 0 ] && [ -z "${RAYNAS_E2E_KEEP:-}" ]; then rm -rf "$T"; else echo "e2e: logs in $T"; fi
}

[ "$(id -u)" = 0 ] || die "needs root (network and mount namespaces)"
for tool in ip unshare nsenter /usr/sbin/sshd ssh ssh-keygen rsync curl python3; do
  command -v "$tool" > /dev/null || die "needs $tool: apt-get install iproute2 util-linux openssh-server rsync curl"
done
[ -x "$VENV/bin/ray" ] || die "no $VENV/bin/ray: run \`make install\` first"
for n in lan head worker; do ip netns del "$NS-$n" 2>/dev/null || true; done   # a run killed by -9
trap cleanup EXIT
rm -rf "$T"
mkdir -p "$T/client/home/.ssh" "$T/client/tmp" "$T/head" "$T/worker" "$T/nfs" "$T/wheelhouse"
[ -d "$NFS_MOUNT" ] || { mkdir -p "$NFS_MOUNT"; touch "$T/made_nfs_mount"; }
ssh-keygen -q -t ed25519 -N '' -f "$T/client/id_ed25519"

# The nodes' package source: no index, a local wheelhouse with the build backend of `pip install -e`;
# everything else must already be in the image at exactly the pinned versions.
"$VENV/bin/pip" download -q -d "$T/wheelhouse" 'setuptools>=68' wheel
for n in head worker; do
  d=$T/$n
  mkdir -p "$d/home/.ssh" "$d/home/.config/pip" "$d/tmp"
  chmod 700 "$d/home" "$d/home/.ssh"; chmod 1777 "$d/tmp"
  cp "$T/client/id_ed25519.pub" "$d/home/.ssh/authorized_keys"
  ssh-keygen -q -t ed25519 -N '' -f "$d/ssh_host_key"
  printf '[global]\nno-index = true\nfind-links = %s\n' "$T/wheelhouse" > "$d/home/.config/pip/pip.conf"
done

# Network: a bridge in the client's namespace, one veth to each node; 127/8 routed off `lo` needs
# route_localnet, and each `lo` keeps only 127.0.0.1 so that the other 127.0.0.x are reached over the wire.
ip netns add "$NS-lan"
ip -n "$NS-lan" link add br0 type bridge
addr_ns() {   # namespace, device, address
  ip netns exec "$1" sysctl -qw net.ipv4.conf.all.route_localnet=1 "net.ipv4.conf.$2.route_localnet=1"
  ip -n "$1" link set lo up
  ip -n "$1" addr del 127.0.0.1/8 dev lo 2>/dev/null || true
  ip -n "$1" addr add 127.0.0.1/32 dev lo
  ip -n "$1" addr add "$3/8" dev "$2" scope global
  ip -n "$1" link set "$2" up
  ip -n "$1" route add default dev "$2"   # Ray finds the node's address by routing towards the outside
}
addr_ns "$NS-lan" br0 "$CLIENT"
for pair in "head:$HEAD" "worker:$WORKER"; do
  n=${pair%%:*} ip=${pair#*:}
  ip netns add "$NS-$n"
  ip -n "$NS-lan" link add "v$n" type veth peer name eth0 netns "$NS-$n"
  ip -n "$NS-lan" link set "v$n" master br0 up
  addr_ns "$NS-$n" eth0 "$ip"
  in_ns "$n" "$NS-$n" sh "$HERE/node.sh" "$T/$n" "$ip" "$VENV" "$T/nfs" "$NFS_MOUNT"
done
for pair in "head:$HEAD" "worker:$WORKER"; do
  n=${pair%%:*} ip=${pair#*:}
  for _ in $(seq 60); do
    ip netns exec "$NS-lan" bash -c "exec 3<>/dev/tcp/$ip/22" 2> /dev/null && break
    sleep 1
  done
  ip netns exec "$NS-lan" bash -c "exec 3<>/dev/tcp/$ip/22" 2> /dev/null || { cat "$T/$n/ns.log"; die "no sshd on $ip"; }
done
say "2 nodes up (sshd on $HEAD and $WORKER)"

# The user's checkout: the repository's files, cluster.yaml rendered for these machines.
mkdir -p "$T/client/project"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | rsync -a --from0 --files-from=- "$ROOT/" "$T/client/project/"
"$VENV/bin/python" - "$T/client/project/cluster.yaml" "$HEAD" "$WORKER" "$T/client/id_ed25519" <<'EOF'
import sys, yaml
path, head, worker, key = sys.argv[1:]
config = yaml.safe_load(open(path))
config["provider"].update(head_ip=head, worker_ips=[worker])
config["auth"] = {"ssh_user": "root", "ssh_private_key": key}
yaml.safe_dump(config, open(path, "w"), sort_keys=False)
EOF

# The session, on the client: own /tmp (the launcher's cluster state, ssh sockets) and home (ssh, token).
in_ns client "$NS-lan" sh -c 'mount --bind "$1/client/tmp" /tmp &&
  exec env HOME="$1/client/home" PATH="$2/bin:$PATH" E2E_T0="$3" bash "$4" --session' \
  sh "$T" "$VENV" "$T0" "$HERE/e2e.sh"
tail -f "$T/client/ns.log" --pid "$(cat "$T/client/unshare.pid")" &
tailer=$!
wait "$(cat "$T/client/unshare.pid")" || die "the cluster session failed"
wait "$tailer"

for _ in $(seq 60); do
  [ -z "$(nodes_ps head)$(nodes_ps worker)" ] && break
  sleep 1
done
for n in head worker; do
  left=$(nodes_ps "$n")
  [ -z "$left" ] || die "Ray processes left on the $n after \`ray down\`:"$'\n'"$left"
done
say "ray down: no Ray process left on either node"
strays=$(find "$T/worker/home" -name '*.db' -not -path '*/raynas-venv/*' 2>/dev/null)
[ -z "$strays" ] || die "stray MLflow store(s) on the worker: $strays"
say "PASS: the README's cluster session, wall time $(( $(date +%s) - T0 )) s"
