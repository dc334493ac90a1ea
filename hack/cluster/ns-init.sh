#!/bin/bash
# Holder of the cluster's namespaces. Runs as
#   unshare --mount --net --propagation private --fork ns-init.sh CLUSTER_DIR NODE_IP
# so that every mount and network change stays inside; it prepares them and
# then sleeps until "down" kills it.
set -euo pipefail
dir=$1 ip=$2
mount -t tmpfs -o mode=755 untorn-run /run
mkdir -p /run/containerd /run/netns "$dir/varlib" "$dir/varlog"
mount --bind "$dir/varlib" /var/lib
mount --bind "$dir/varlog" /var/log
# the kubelet and Bidirectional CSI mounts need shared propagation (only
# within this namespace: it was created private)
mount --make-rshared /
ip link set lo up
# the node's address on a veth pair (the kernel has no dummy driver)
ip link add untorn0 type veth peer name untorn0p
ip addr add "$ip/24" dev untorn0
ip link set untorn0 up
ip link set untorn0p up
ip route add default dev untorn0
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2> /dev/null || echo "warning: bridge-nf-call-iptables not settable" >&2
echo $$ > "$dir/ns.pid"
exec sleep infinity
