# shellcheck shell=bash
# netns.sh — network namespace helpers for scripts/demo.sh (source it).
#
# Topology (the same one the e2e tests build):
#   laptop  eth0 198.18.0.1/30  <-veth->  gateway lap0 198.18.0.2/30
#   gateway lan0 198.19.77.1/24 <-veth->  LAN host eth0 198.19.77.10/24 (default via .1)
# The gateway forwards (ip_forward=1 inside its namespace only). The laptop has
# no route to the LAN except through the VPN tunnel. No NAT; nothing leaves
# the namespaces.

# sp_ns_create PREFIX: creates ${PREFIX}lap, ${PREFIX}gw, ${PREFIX}lan and sets
# SP_LAP, SP_GW, SP_LAN to their names. Returns non-zero on the first failure.
sp_ns_create() {
	local p=$1
	SP_LAP=${p}lap SP_GW=${p}gw SP_LAN=${p}lan
	local ns
	for ns in "$SP_LAP" "$SP_GW" "$SP_LAN"; do
		ip netns add "$ns" || return 1
		ip -n "$ns" link set lo up || return 1
	done
	# The laptop's own resolv.conf (ip netns exec binds it over
	# /etc/resolv.conf), so nothing run there can rewrite this machine's.
	mkdir -p "/etc/netns/$SP_LAP" &&
		printf '# sallyport demo laptop\nnameserver 192.0.2.1\n' >"/etc/netns/$SP_LAP/resolv.conf" || return 1
	ip -n "$SP_LAP" link add eth0 type veth peer name lap0 netns "$SP_GW" &&
		ip -n "$SP_LAP" addr add 198.18.0.1/30 dev eth0 &&
		ip -n "$SP_LAP" link set eth0 up &&
		ip -n "$SP_GW" addr add 198.18.0.2/30 dev lap0 &&
		ip -n "$SP_GW" link set lap0 up &&
		ip -n "$SP_GW" link add lan0 type veth peer name eth0 netns "$SP_LAN" &&
		ip -n "$SP_GW" addr add 198.19.77.1/24 dev lan0 &&
		ip -n "$SP_GW" link set lan0 up &&
		ip -n "$SP_LAN" addr add 198.19.77.10/24 dev eth0 &&
		ip -n "$SP_LAN" link set eth0 up &&
		ip -n "$SP_LAN" route add default via 198.19.77.1 &&
		ip netns exec "$SP_GW" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
}

# sp_ns_destroy PREFIX: deletes every namespace whose name starts with PREFIX.
sp_ns_destroy() {
	local p=$1 ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		case $ns in "$p"*) ip netns del "$ns" 2>/dev/null ;; esac
	done
	for ns in /etc/netns/"$p"*; do
		[ -d "$ns" ] && rm -rf "$ns"
	done
	return 0
}
