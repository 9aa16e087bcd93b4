#!/bin/sh
# PID 1 (the init) of one "machine" of the end-to-end cluster test (tests/cluster/e2e.sh starts it with
# `ip netns exec NS unshare --pid --mount --uts --fork --kill-child --mount-proc`): its own network, process
# table, hostname, /root and /tmp, so that `ray stop` there sees and stops only this node's Ray.
#   node.sh NODE_DIR IP SOURCE_VENV NFS_DIR NFS_MOUNT
# The node comes as an image would: Debian's python3, sshd, and the project's Python stack (torch, Ray,
# MLflow at `make install`'s versions, copy-on-write over SOURCE_VENV's site-packages) already in
# ~/raynas-venv, with pip pointed at a local wheelhouse and no package index. cluster.yaml's setup
# commands then run for real: a pin that differs from what the image holds fails, there is nothing to fetch.
set -eu
node=$1 ip=$2 src=$3 nfs=$4 nfs_mount=$5

mount --bind "$node/home" /root
mount --bind "$node/tmp" /tmp
mkdir -p "$nfs_mount" && mount --bind "$nfs" "$nfs_mount"   # the shared storage, as an NFS mount would be
hostname "node-$ip"

venv=/root/raynas-venv
site=lib/python3.11/site-packages
if [ ! -d "$venv/$site" ]; then
  python3 -m venv --without-pip "$venv"
fi
mkdir -p "$node/venv-upper" "$node/venv-work"
mount -t overlay overlay -o "lowerdir=$src/$site,upperdir=$node/venv-upper,workdir=$node/venv-work" "$venv/$site"
for f in "$src"/bin/*; do   # console scripts (pip, ray, mlflow, ...) with this venv's interpreter
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  head -c 2 "$f" | grep -q '#!' && head -n 1 "$f" | grep -q "^#!$src/bin/python" || continue
  { echo "#!$venv/bin/python"; tail -n +2 "$f"; } > "$venv/bin/${f##*/}"
  chmod 755 "$venv/bin/${f##*/}"
done

mkdir -p /run/sshd
cat > "$node/sshd_config" <<EOF
ListenAddress $ip
HostKey $node/ssh_host_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -D -e -f "$node/sshd_config" &
wait "$!"   # as PID 1, sh reaps what is orphaned here (a raylet's agents outlive it), as init would
