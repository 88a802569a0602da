#!/usr/bin/env bash
# scale.sh — `make scale`: one gateway holding a fleet of devices, measured
# as a company would use it. The load generator (bench/scale) speaks the
# real protocol (mTLS with each device's own certificate, hello, config,
# keepalives) with no TUN on its side, against the real gateway binary.
#
# Usage (as root): bash scripts/scale.sh /path/to/sallyport
#
# Topology (two namespaces made for this run, deleted on every exit):
#   load generator  gen0 198.18.0.1/24 (+ source addresses .10-.17)
#                   <-veth->  gateway  gw0 198.18.0.2/24
#   the gateway listens on 198.18.0.2:8443 (TUN sp0, pool 10.64.0.0/16),
#   the bare TLS server (bench/scale bare, same certificate) on :9443.
#
# Steps: a PKI (`sallyport pki init/server`), SCALE_SESSIONS device
# certificates issued through the PKI store (`scale issue`: pki/ca, the
# same code as `sallyport pki issue`), the gateway and the bare server
# started in the gateway namespace, then `scale load` in the generator
# namespace prints:
#   sessions held; gateway RSS per session (VmRSS minus the baseline before
#   any session); gateway CPU seconds per minute with every session idle;
#   the renewal storm (every held session renews its certificate inside
#   the session, the requests spread over SCALE_RENEW_WINDOW seconds: a
#   fleet whose certificates all reach renew_at within a minute) with its
#   time, latency, failures, lost sessions and gateway CPU per renewal;
#   the reconnect-storm time (SCALE_STORM sessions drop at once and all
#   reconnect at once); RSS after each of SCALE_CYCLES full reconnect cycles
#   (must not ratchet); new sessions/s against the bare crypto/tls ceiling.
#
# Environment (defaults are the full run, about 5 minutes on 2 CPUs):
#   SCALE_SESSIONS=10000   devices issued and sessions held
#   SCALE_KEY=ecdsa        device and gateway key type: ecdsa (P-256) or ed25519
#   SCALE_CONCURRENCY=16   handshakes in flight (ramp, cycles, churn)
#   SCALE_IDLE=30          seconds of idle CPU measurement (reported per minute)
#   SCALE_RENEW_WINDOW=60  seconds over which every session renews (0: all at
#                          once; -1: no renewal storm)
#   SCALE_STORM=2000       sessions in the reconnect storm (capped at SESSIONS)
#   SCALE_CYCLES=4         full reconnect cycles
#   SCALE_CHURN=1000       connect+close operations per server for the ratio
#   SCALE_MAX_RSS_MB=14000 stop when the gateway's RSS passes this (the
#                          machine has no swap; a leak must not take it down)
#   SCALE_TIMEOUT=540      bound on the load run, seconds
#   SCALE_KEEP=1           keep the work directory (logs, PKI)
# A smoke run: SCALE_SESSIONS=200 SCALE_IDLE=5 SCALE_STORM=100 SCALE_CYCLES=2 SCALE_CHURN=200
#
# Informational: goals are printed as PASS/MISS; the exit status is 0 when
# the run completed, whatever the figures. Nothing leaves the namespaces;
# on any exit every process this script started is stopped by pid and both
# namespaces are deleted.

set -uo pipefail

BIN=${1:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SESSIONS=${SCALE_SESSIONS:-10000}
KEY=${SCALE_KEY:-ecdsa}
CONC=${SCALE_CONCURRENCY:-16}
IDLE=${SCALE_IDLE:-30}
STORM=${SCALE_STORM:-2000}
RENEW_WINDOW=${SCALE_RENEW_WINDOW:-60}
CYCLES=${SCALE_CYCLES:-4}
CHURN=${SCALE_CHURN:-1000}
MAX_RSS=${SCALE_MAX_RSS_MB:-14000}
TIMEOUT=${SCALE_TIMEOUT:-540}

GEN_IP=198.18.0.1
GW_IP=198.18.0.2
SP_PORT=8443
BARE_PORT=9443
POOL=10.64.0.0/16
NOFILE=1048576

log() { printf 'scale: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for v in SESSIONS CONC IDLE STORM CYCLES CHURN MAX_RSS TIMEOUT; do
	case ${!v} in '' | *[!0-9]*) die "SCALE_$v must be a whole number, got '${!v}'" ;; esac
done
case $RENEW_WINDOW in -1 | [0-9] | [0-9][0-9] | [0-9][0-9][0-9]) ;; *) die "SCALE_RENEW_WINDOW must be -1 or 0..999 seconds, got '$RENEW_WINDOW'" ;; esac
[ "$SESSIONS" -ge 1 ] && [ "$SESSIONS" -le 60000 ] || die "SCALE_SESSIONS must be 1..60000 (the pool is a /16)"
[ "$STORM" -le "$SESSIONS" ] || STORM=$SESSIONS
case $KEY in ecdsa | p256 | ed25519) ;; *) die "SCALE_KEY must be ecdsa or ed25519" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs iproute2 (ip)"
command -v ss >/dev/null || die "needs ss (iproute2)"
command -v go >/dev/null || die "needs Go to build bench/scale"
[ -n "$BIN" ] && [ -x "$BIN" ] || die "sallyport binary '${BIN:-<none given>}' not found (run: make scale)"

# Sessions need file descriptors on both sides; children inherit this.
ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || die "cannot raise the open file limit"
[ "$(ulimit -n)" -ge $((SESSIONS + 1024)) ] || die "open file limit $(ulimit -n) is too low for $SESSIONS sessions"

# ------------------------------------------------------------------ cleanup

SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS_GEN=spscale-$SUFFIX-gen
NS_GW=spscale-$SUFFIX-gw
# tmpfs work directory: 10,000 keys and certificates are written with
# fsync, which on a disk would dominate the issue time.
W=$(mktemp -d /dev/shm/sallyport-scale.XXXXXX 2>/dev/null || mktemp -d /tmp/sallyport-scale.XXXXXX)
PIDS=()

stop_pid() { # stop_pid PID [SECONDS]: SIGTERM, wait (default 10 s), then SIGKILL
	local pid=$1 max=$((${2:-10} * 10)) i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < max; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid still running ${2:-10} s after SIGTERM; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

cleanup() {
	local pid
	trap - EXIT INT TERM HUP
	for pid in "${PIDS[@]}"; do stop_pid "$pid" 30; done
	ip netns del "$NS_GEN" 2>/dev/null
	ip netns del "$NS_GW" 2>/dev/null
	if [ "${SCALE_KEEP:-0}" = 1 ]; then
		log "work directory kept: $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

nsx() { # nsx NS CMD...: run CMD in namespace NS
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# start NAME NS CMD...: run CMD in NS in the background with output in
# $W/NAME.log; sets LAST_PID (`ip netns exec` execs, so it is CMD's pid).
start() {
	local name=$1 ns=$2
	shift 2
	ip netns exec "$ns" "$@" >"$W/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

wait_listen() { # wait_listen NS PORT: up to 10 s for a TCP listener
	local i
	for ((i = 0; i < 100; i++)); do
		nsx "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
		sleep 0.1
	done
	return 1
}

# ------------------------------------------------------------------ build

SCALE=$W/scale
(cd "$REPO" && go build -o "$SCALE" ./bench/scale) || die "build bench/scale failed"

# ------------------------------------------------------------------ namespaces

SRC_ADDRS=
setup_ns() {
	local i
	ip netns add "$NS_GEN" && ip netns add "$NS_GW" || return 1
	ip -n "$NS_GEN" link set lo up && ip -n "$NS_GW" link set lo up &&
		ip -n "$NS_GEN" link add gen0 type veth peer name gw0 netns "$NS_GW" &&
		ip -n "$NS_GEN" addr add "$GEN_IP/24" dev gen0 &&
		ip -n "$NS_GEN" link set gen0 up &&
		ip -n "$NS_GW" addr add "$GW_IP/24" dev gw0 &&
		ip -n "$NS_GW" link set gw0 up || return 1
	# Several source addresses and the whole port range, so tens of
	# thousands of connects (and their TIME_WAITs) never run out of ports.
	for i in $(seq 10 17); do
		ip -n "$NS_GEN" addr add "198.18.0.$i/24" dev gen0 || return 1
		SRC_ADDRS=${SRC_ADDRS:+$SRC_ADDRS,}198.18.0.$i
	done
	nsx "$NS_GEN" sysctl -q -w net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1 &&
		nsx "$NS_GW" sysctl -q -w net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192 net.ipv4.ip_forward=1
}
setup_ns || die "namespace setup failed"
log "namespaces $NS_GEN $NS_GW; work dir $W; $SESSIONS sessions, $KEY keys"

# ------------------------------------------------------------------ PKI

PKI=$W/pki
{
	"$BIN" pki init --dir "$PKI" --name "Scale CA" --key "$KEY" &&
		"$BIN" pki server --dir "$PKI" --name gw.scale --ip "$GW_IP" --key "$KEY" &&
		"$BIN" pki issuer --dir "$PKI" --key "$KEY"
} >"$W/pki.log" 2>&1 || die "PKI setup failed: $(tail -3 "$W/pki.log")"
log "issuing $SESSIONS device certificates through the PKI store"
ISSUE=$("$SCALE" issue --dir "$PKI" --devices "$SESSIONS" --key "$KEY" 2>&1) || die "issue failed: $ISSUE"
log "  $ISSUE"

# ------------------------------------------------------------------ servers

cat >"$W/server.toml" <<EOF
# make scale gateway
listen = "$GW_IP:$SP_PORT"

[tls]
cert = "$PKI/servers/gw.scale.crt"
key = "$PKI/servers/gw.scale.key"
client_ca = "$PKI/ca.crt"
crl = "$PKI/crl.pem"

[tunnel]
device = "sp0"
ipv4_pool = "$POOL"
# room for every device plus the churn phase's short sessions
max_sessions = $((SESSIONS + 1000))
lease_file = "leases.json"

[admin]
socket = "$W/server.sock"

[renewal]
issuer_cert = "$PKI/renewal-issuer.crt"
issuer_key = "$PKI/renewal-issuer.key"
lifetime = "24h"
record = "$W/renewals.jsonl"

[[policy]]
name = "fleet"
match = { ou = ["scale"] }
allow = ["198.19.0.0/16"]
EOF
chmod 600 "$W/server.toml"

start gateway "$NS_GW" "$BIN" server -c "$W/server.toml"
GW_PID=$LAST_PID
start bare "$NS_GW" "$SCALE" bare --listen "$GW_IP:$BARE_PORT" --cert "$PKI/servers/gw.scale.crt" \
	--key "$PKI/servers/gw.scale.key" --ca "$PKI/ca.crt"
BARE_PID=$LAST_PID
wait_listen "$NS_GW" "$SP_PORT" || die "gateway did not start: $(tail -5 "$W/gateway.log")"
wait_listen "$NS_GW" "$BARE_PORT" || die "bare TLS server did not start: $(tail -5 "$W/bare.log")"
sleep 1 # let the gateway's start-up garbage settle before the baseline

# ------------------------------------------------------------------ load

log "gateway pid $GW_PID; driving sessions from $NS_GEN"
nsx "$NS_GEN" "$SCALE" load --gateway "$GW_IP:$SP_PORT" --bare "$GW_IP:$BARE_PORT" --server-name gw.scale \
	--dir "$PKI" --devices "$SESSIONS" --gateway-pid "$GW_PID" --bare-pid "$BARE_PID" --concurrency "$CONC" \
	--idle "${IDLE}s" --renew-window "${RENEW_WINDOW}s" --storm "$STORM" --cycles "$CYCLES" --churn "$CHURN" --source-addrs "$SRC_ADDRS" \
	--max-rss-mb "$MAX_RSS" --timeout "${TIMEOUT}s" --clk-tck "$(getconf CLK_TCK 2>/dev/null || echo 100)" \
	2> >(tee "$W/load.log" >&2)
rc=$?
kill -0 "$GW_PID" 2>/dev/null || log "the gateway exited during the run: $(tail -5 "$W/gateway.log")"
if [ "$rc" != 0 ]; then
	log "load run failed (exit $rc); gateway log tail:"
	tail -5 "$W/gateway.log" >&2
	exit "$rc"
fi
exit 0
