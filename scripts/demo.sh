#!/usr/bin/env bash
# demo.sh — show sallyport working end to end on one machine (run as root):
# a laptop, a gateway and a LAN host in three throw-away network namespaces.
#
#   scripts/demo.sh [path/to/sallyport]      (or SALLYPORT_BIN=...; `make demo`)
#
# It makes a device CA, a gateway cert and two devices (alice in group "eng",
# which the policy lets into the LAN; dave in group "sales", which matches no
# policy), gives alice a one-file bundle, starts the gateway, brings alice's
# laptop up from the bundle, shows both status views, pings and fetches data
# from the LAN host through the tunnel, shows dave being refused, revokes
# alice and shows her cut off, then shows carol on a full tunnel whose kill
# switch lets nothing out while the gateway is down or after kill -9, until
# `sallyport down`, and again from the first second of the next `up` while
# the gateway is still down. The laptop's profiles are used by name, as on a
# real laptop (`sallyport up alice` reads the profile alice.toml).
# Everything it creates is removed on exit, also on failure or Ctrl-C. Exit
# status is non-zero if any step failed; no step is ever skipped (a demo
# that cannot run one fails).
#
# Needs: bash, iproute2, the sallyport binary, and the tiny traffic helper
# of scripts/demohelper: $SALLYPORT_DEMOHELPER (`make demo` builds it), else
# built here with Go.
set -u -o pipefail

BIN=${1:-${SALLYPORT_BIN:-}}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/netns.sh
. "$HERE/netns.sh"

if [ -z "$BIN" ]; then
	echo "usage: $0 path/to/sallyport   (or set SALLYPORT_BIN)" >&2
	exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
if [ ! -x "$BIN" ]; then
	echo "demo: $BIN is not an executable (build it first: make)" >&2
	exit 2
fi
if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (network namespaces and TUN devices); try: sudo $0 $BIN" >&2
	exit 2
fi
if ! command -v ip >/dev/null; then
	echo "demo: needs iproute2 (the ip command)" >&2
	exit 2
fi

PFX="spdemo$$-"
WORK=$(mktemp -d /tmp/sallyport-demo.XXXXXX)
# The demo's laptop is not this machine: it keeps its state (what the
# gateway said last, a resolv.conf backup) and its locks under $WORK, not in
# /var/lib/sallyport or /run/sallyport, and never talks to this machine's
# systemd-resolved (its resolv.conf is the namespace's own: netns.sh).
# Its profiles (what /etc/sallyport is on a laptop) are in $WORK/etc.
export STATE_DIRECTORY=$WORK/state RUNTIME_DIRECTORY=$WORK/run CONFIGURATION_DIRECTORY=$WORK/etc
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$WORK/no-system-bus
mkdir -m 0700 "$STATE_DIRECTORY" "$RUNTIME_DIRECTORY" "$CONFIGURATION_DIRECTORY"
PIDS=()
RESULTS=()
FAILED=0

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B= G= R= N=; fi

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
		kill -KILL "$pid" 2>/dev/null
	done
	sp_ns_destroy "$PFX"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

step() { echo; echo "${B}== $* ==${N}"; }
ok() { RESULTS+=("${G}✔${N} $*"); echo "${G}✔${N} $*"; }
bad() { RESULTS+=("${R}✘${N} $*"); echo "${R}✘${N} $*"; FAILED=1; }
indent() { sed 's/^/    /'; }
# waitfor SECONDS CMD...: retry CMD every 0.2 s until it succeeds.
waitfor() {
	local end=$((SECONDS + $1)); shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.2
	done
}
summary() {
	echo
	echo "${B}== summary ==${N}"
	printf '%s\n' "${RESULTS[@]}"
	if [ $FAILED = 0 ]; then echo "${G}${B}demo passed${N}"; else echo "${R}${B}demo FAILED${N}"; fi
}
die() { bad "$*"; summary; exit 1; }
# bg NS LOG CMD...: start CMD in namespace NS in the background.
bg() {
	local ns=$1 log=$2; shift 2
	ip netns exec "$ns" "$@" >"$log" 2>&1 &
	PIDS+=($!)
	LASTPID=$!
}

step "network namespaces"
sp_ns_create "$PFX" || die "could not create namespaces"
ok "namespaces $SP_LAP (laptop 198.18.0.1), $SP_GW (gateway 198.18.0.2 / 198.19.77.1), $SP_LAN (LAN host 198.19.77.10)"

# The traffic helper (ping, fetch, serve). Without it the ping, fetch and
# kill switch steps could not run: the demo stops instead of skipping them.
HELPER=${SALLYPORT_DEMOHELPER:-}
if [ -n "$HELPER" ]; then
	[ -x "$HELPER" ] || die "SALLYPORT_DEMOHELPER=$HELPER is not an executable: the traffic steps (ping, fetch, kill switch) cannot run"
elif ! command -v go >/dev/null; then
	die "no traffic helper: set SALLYPORT_DEMOHELPER, or install Go to build scripts/demohelper (make demo does); the traffic steps cannot run"
elif (cd "$HERE/demohelper" && go build -o "$WORK/demohelper" .) >"$WORK/build.log" 2>&1; then
	HELPER=$WORK/demohelper
else
	die "could not build scripts/demohelper: $(tail -1 "$WORK/build.log"); the traffic steps cannot run"
fi
ok "traffic helper $HELPER"

step "device CA (sallyport pki)"
D=$WORK/pki
"$BIN" pki init --dir "$D" --name "Demo CA" 2>&1 | indent || die "pki init failed"
"$BIN" pki server --dir "$D" --name gw.demo --ip 198.18.0.2 2>&1 | indent || die "pki server failed"
"$BIN" pki issue --dir "$D" --device alice --group eng 2>&1 | indent || die "pki issue alice failed"
"$BIN" pki issue --dir "$D" --device dave --group sales 2>&1 | indent || die "pki issue dave failed"
ok "CA, gateway cert gw.demo, devices alice (eng) and dave (sales)"
# Installed as the profile "alice" (on a laptop: /etc/sallyport/alice.toml).
"$BIN" pki bundle --dir "$D" --device alice --server 198.18.0.2:8443 --server-name gw.demo \
	-o "$CONFIGURATION_DIRECTORY/alice.toml" 2>&1 | indent || die "pki bundle failed"
[ -s "$CONFIGURATION_DIRECTORY/alice.toml" ] || die "pki bundle wrote no $CONFIGURATION_DIRECTORY/alice.toml"
ok "one-file bundle for alice: $(wc -c <"$CONFIGURATION_DIRECTORY/alice.toml") bytes (CA, cert and key inline), installed as profile alice"

step "gateway"
cat >"$WORK/server.toml" <<EOF
listen = "198.18.0.2:8443"
[tls]
cert = "$D/servers/gw.demo.crt"
key = "$D/servers/gw.demo.key"
client_ca = "$D/ca.crt"
crl = "$D/crl.pem"
[tunnel]
device = "sp0"
ipv4_pool = "10.213.0.0/24"
lease_file = "leases.json"
[admin]
socket = "$WORK/server.sock"
[[policy]]
name = "engineering"
match = { ou = ["eng"] }
allow = ["198.19.77.0/24 tcp/8080", "198.19.77.0/24 icmp"]
routes = ["198.19.77.0/24"]
[[policy]]
name = "everything"
match = { ou = ["ops"] }
allow = ["198.19.77.0/24 icmp"]
routes = ["0.0.0.0/0"]
EOF
sed 's/^/    /' "$WORK/server.toml"
bg "$SP_GW" "$WORK/server.log" "$BIN" server -c "$WORK/server.toml"
SERVER_PID=$LASTPID
sstatus() { ip netns exec "$SP_GW" "$BIN" server status --socket "$WORK/server.sock" "$@"; }
waitfor 10 sstatus || { indent <"$WORK/server.log"; die "gateway did not start"; }
ok "gateway listening on 198.18.0.2:8443 (pid $SERVER_PID)"

step "alice's laptop: sallyport up alice"
bg "$SP_LAP" "$WORK/alice.log" "$BIN" up alice
ALICE_PID=$LASTPID
cstatus() { ip netns exec "$SP_LAP" "$BIN" status alice "$@"; }
# (Output is captured before matching: with pipefail, `cmd | grep -q` can
# fail when grep exits early and cmd gets SIGPIPE.)
connected() { local j; j=$(cstatus --json 2>/dev/null) && [[ $j =~ \"connected\":\ *true ]]; }
if waitfor 15 connected; then
	ok "alice connected"
else
	indent <"$WORK/alice.log"
	die "alice did not connect"
fi
echo "-- sallyport server status (gateway)"
sstatus 2>&1 | indent
echo "-- sallyport status (laptop: every profile that is up)"
ip netns exec "$SP_LAP" "$BIN" status 2>&1 | indent
echo "-- laptop routes via the tunnel (sallyport's own table, behind ip rules)"
ip -n "$SP_LAP" route show table all dev sp0 | indent
ip -n "$SP_LAP" rule show | indent
if [[ $(ip -n "$SP_LAP" route show table all dev sp0) == *198.19.77.0/24* ]]; then
	ok "pushed route 198.19.77.0/24 installed on sp0"
else
	bad "pushed route 198.19.77.0/24 missing on the laptop"
fi

step "traffic to the LAN host through the tunnel"
if ip netns exec "$SP_LAP" "$HELPER" ping 198.19.77.10 3 2>&1 | indent; then
	ok "ping 198.19.77.10 from the laptop through the tunnel"
else
	bad "ping 198.19.77.10 through the tunnel"
fi
bg "$SP_LAN" "$WORK/lan.log" "$HELPER" serve 198.19.77.10:8080
waitfor 5 grep -q listening "$WORK/lan.log"
got=$(ip netns exec "$SP_LAP" "$HELPER" fetch 198.19.77.10:8080 2>&1)
echo "$got" | indent
sleep 0.3
sent=$(grep -o 'sha256=[0-9a-f]*' "$WORK/lan.log" | tail -1)
if [ -n "$sent" ] && [[ $got == *"$sent"* ]]; then
	ok "fetched 1 MiB from 198.19.77.10:8080, checksum matches ($sent)"
else
	bad "fetch from 198.19.77.10:8080 (laptop got: $got; LAN host sent: ${sent:-nothing})"
fi
echo "-- a port outside alice's policy (tcp/8081) gets no answer:"
if ip netns exec "$SP_LAP" "$HELPER" fetch 198.19.77.10:8081 2>&1 | indent; then
	bad "tcp/8081 answered although policy allows only tcp/8080"
else
	ok "tcp/8081 is outside alice's policy: no answer"
fi
echo "-- gateway counters"
sstatus 2>&1 | indent

step "dave (group sales, matches no policy) is refused"
"$BIN" pki bundle --dir "$D" --device dave --server 198.18.0.2:8443 --server-name gw.demo \
	-o "$WORK/dave.toml" >/dev/null 2>&1 || die "pki bundle dave failed"
sed -i -e 's/^device *=.*/device = "sp1"/' "$WORK/dave.toml"
grep -q '^\[admin\]' "$WORK/dave.toml" || printf '\n[admin]\nsocket = "%s"\n' "$WORK/dave.sock" >>"$WORK/dave.toml"
grep -q '^device' "$WORK/dave.toml" || sed -i -e 's/^\[tunnel\]$/[tunnel]\ndevice = "sp1"/' "$WORK/dave.toml"
bg "$SP_LAP" "$WORK/dave.log" "$BIN" up -c "$WORK/dave.toml"
DAVE_PID=$LASTPID
refused() { grep -q 'handshake refused.*device=dave' "$WORK/server.log"; }
if waitfor 10 refused; then
	grep -m1 'handshake refused.*device=dave' "$WORK/server.log" | indent
	if grep -q 'handshake refused.*reason=no-policy.*device=dave' "$WORK/server.log"; then
		ok "dave refused at the handshake, logged reason=no-policy"
	else
		bad "dave refused, but not with reason=no-policy"
	fi
else
	bad "no 'handshake refused' line for dave in the gateway log"
fi
if [[ $(ip -n "$SP_LAP" -4 addr show dev sp1 2>/dev/null) == *"inet "* ]]; then
	bad "dave got a tunnel address"
else
	ok "dave never got a tunnel"
fi
kill -TERM "$DAVE_PID" 2>/dev/null

step "revoke alice while she is connected"
"$BIN" pki revoke --dir "$D" --device alice 2>&1 | indent || die "pki revoke failed"
T0=$(date +%s%N)
alice_gone() { local j; j=$(sstatus --json) && ! [[ $j =~ \"device\":\ *\"alice\" ]]; }
if waitfor 5 alice_gone; then
	ms=$((($(date +%s%N) - T0) / 1000000))
	ok "alice's session closed ${ms} ms after the new CRL was written"
else
	bad "alice still connected 5 s after revocation"
fi
grep 'session closed.*device=alice' "$WORK/server.log" | tail -1 | indent
echo "-- sallyport server status (gateway)"
sstatus 2>&1 | indent
echo "-- sallyport status (laptop)"
cstatus 2>&1 | indent
if ip netns exec "$SP_LAP" "$HELPER" ping 198.19.77.10 1 >/dev/null 2>&1; then
	bad "alice still reaches the LAN after revocation"
else
	ok "alice can no longer reach the LAN"
fi

step "alice's laptop: sallyport down alice"
ip netns exec "$SP_LAP" "$BIN" down alice 2>&1 | indent
waitfor 10 bash -c "! kill -0 $ALICE_PID" || bad "client still running after down"
if ip -n "$SP_LAP" link show sp0 >/dev/null 2>&1 || [[ $(ip -n "$SP_LAP" route show table all) == *198.19.77.* ]]; then
	bad "sallyport down left the TUN device or routes behind"
else
	ok "sallyport down removed the TUN device, address and routes"
fi

step "full tunnel with the kill switch (carol, group ops: routes = [\"0.0.0.0/0\"])"
# The laptop gets a plain default route through the gateway's namespace, as
# if to the internet: without the VPN the LAN host answers in the clear.
ip -n "$SP_LAP" route add default via 198.18.0.2
"$BIN" pki issue --dir "$D" --device carol --group ops >/dev/null 2>&1 || die "pki issue carol failed"
"$BIN" pki bundle --dir "$D" --device carol --server 198.18.0.2:8443 --server-name gw.demo \
	-o "$CONFIGURATION_DIRECTORY/carol.toml" >/dev/null 2>&1 || die "pki bundle carol failed"
kstatus() { ip netns exec "$SP_LAP" "$BIN" status carol "$@"; }
cping() { ip netns exec "$SP_LAP" "$HELPER" ping 198.19.77.10 1 >/dev/null 2>&1; }
bg "$SP_LAP" "$WORK/carol.log" "$BIN" up carol
CAROL_PID=$LASTPID
kconnected() { local j; j=$(kstatus --json 2>/dev/null) && [[ $j =~ \"connected\":\ *true ]]; }
if waitfor 15 kconnected; then
	kstatus 2>&1 | indent
	if [[ $(kstatus 2>&1) == *"kill switch:"*"on"* ]]; then ok "carol: full tunnel, kill switch on (read back from the kernel)"; else bad "carol's kill switch is not on"; fi
else
	indent <"$WORK/carol.log"
	bad "carol did not connect"
fi
if cping; then ok "ping 198.19.77.10 through the full tunnel"; else bad "no ping through the full tunnel"; fi
kill -TERM "$SERVER_PID" 2>/dev/null
sleep 1
if cping; then bad "traffic left the laptop with the gateway down"; else ok "gateway down, carol reconnecting: the kill switch lets nothing out"; fi
kill -KILL "$CAROL_PID" 2>/dev/null
wait "$CAROL_PID" 2>/dev/null
if cping; then bad "traffic left the laptop after kill -9 of the client"; else ok "client killed (kill -9): still nothing gets out"; fi
ip netns exec "$SP_LAP" "$BIN" down carol 2>&1 | indent
if cping; then ok "sallyport down removed the kill switch: plain traffic flows again"; else bad "no plain traffic after sallyport down"; fi
# The laptop boots again while the gateway is still down (a captive
# portal, an outage): it remembers what the gateway said last time.
bg "$SP_LAP" "$WORK/carol2.log" "$BIN" up carol
CAROL_PID=$LASTPID
kson() { [[ $(kstatus 2>&1) == *"kill switch:"*"on"* ]]; }
if waitfor 10 kson && ! cping; then
	ok "up again with the gateway down: the remembered kill switch lets nothing out from the first second"
else
	bad "up with the gateway down let traffic out before the first connection"
fi
ip netns exec "$SP_LAP" "$BIN" down carol 2>&1 | indent
if cping; then ok "sallyport down: plain traffic again"; else bad "no plain traffic after the second sallyport down"; fi

summary
exit $FAILED
