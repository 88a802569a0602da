#!/usr/bin/env bash
# Package check for CI (root): build the .deb, check it with lintian (any
# error or warning not overridden with a reason fails), install it with dpkg
# on this machine, run the installed binary, verify the installed units with
# systemd-analyze, check the layout and that nothing was started; then
# follow the installed README's "First gateway" steps as an admin would and
# check the result as the gateway's user (sallyport), and the admin guide's
# credential option; then the README's "First laptop" (bundle, profile by
# name); then purge it and check that its files are gone.
# Anything missing fails the run.
#
# It writes /etc/sallyport (the package's directory) and removes what it
# wrote; it refuses to run where a sallyport package or gateway config is
# already present. Run it under flock /work/.pkg.lock on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "pkgtest: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
for t in dpkg systemd-analyze make go lintian setpriv; do
	command -v "$t" >/dev/null || fail "$t is not installed"
done
if dpkg -s sallyport >/dev/null 2>&1; then
	fail "a sallyport package is already installed here; not touching it"
fi
for f in /etc/sallyport/pki /etc/sallyport/server.toml /etc/sallyport/acme.toml; do
	[ ! -e "$f" ] || fail "$f exists here (someone's gateway?); not touching it"
done

make deb
deb=$(ls -t bin/sallyport_*.deb | head -1)
[ -n "$deb" ] || fail "make deb made no package"

# Debian's own checker, as an admin's tooling would run it. Overrides ship
# in the package (scripts/pkg/lintian-overrides), each with its reason.
lintian_out=$(lintian --fail-on error,warning --display-info --tag-display-limit 0 "$deb" 2>&1) ||
	fail "lintian on $deb:
$lintian_out"
echo "$lintian_out" | grep -v 'running with root privileges' || true
echo "pkgtest: lintian: no errors or warnings"

made_etc=0
cleanup() {
	if [ "$made_etc" = 1 ]; then rm -rf /etc/sallyport/pki /etc/sallyport/server.toml /etc/sallyport/acme.toml; fi
	dpkg_wait --purge sallyport >/dev/null 2>&1 || true
	rm -rf "${tmp:-}"
}
trap cleanup EXIT

# dpkg does not wait for its lock; another package manager run (a helper's
# apt-get on a shared machine) gets up to two minutes to finish.
dpkg_wait() {
	local i out
	for i in $(seq 60); do
		if out=$(dpkg "$@" 2>&1); then echo "$out"; return 0; fi
		grep -q 'lock' <<<"$out" || { echo "$out" >&2; return 1; }
		sleep 2
	done
	echo "$out" >&2
	return 1
}
dpkg_wait -i "$deb" || fail "dpkg -i $deb failed"
/usr/bin/sallyport version || fail "installed binary does not run"
/usr/bin/sallyport --help >/dev/null || fail "installed binary's --help fails"
# The package is built with PKCS#11 support (cgo, -tags pkcs11): a pkcs11:
# key reaches the module loader instead of "built without PKCS#11 support".
p11dir=$(mktemp -d)
p11out=$(/usr/bin/sallyport pki csr --dir "$p11dir" --device pkgtest \
	--pkcs11 'pkcs11:token=t;object=o?module-path=/nonexistent/sallyport-pkgtest.so' 2>&1 || true)
rm -rf "$p11dir"
grep -q 'PKCS#11 module /nonexistent/sallyport-pkgtest.so' <<<"$p11out" ||
	fail "the packaged binary has no PKCS#11 support: $p11out"
for f in /usr/bin/sallyport /lib/systemd/system/sallyport-server.service \
	/lib/systemd/system/sallyport-client@.service /usr/lib/sysctl.d/60-sallyport.conf \
	/usr/share/doc/sallyport/README.md /usr/share/doc/sallyport/docs/admin-guide.md \
	/usr/share/doc/sallyport/examples/server.toml /usr/share/doc/sallyport/examples/client.toml \
	/usr/share/doc/sallyport/copyright /usr/share/doc/sallyport/changelog.gz \
	/usr/share/man/man1/sallyport.1.gz /usr/share/man/man1/sallyport-server.1.gz \
	/usr/share/man/man5/sallyport-server.toml.5.gz /usr/share/man/man5/sallyport-client.toml.5.gz \
	/usr/share/bash-completion/completions/sallyport /usr/share/lintian/overrides/sallyport; do
	[ -e "$f" ] || fail "package did not install $f"
done
getent passwd sallyport >/dev/null || fail "postinst did not create the sallyport user"
getent group sallyport >/dev/null || fail "postinst did not create the sallyport group"
[ "$(stat -c %a:%U:%G /etc/sallyport)" = "750:root:sallyport" ] || fail "/etc/sallyport is $(stat -c %a:%U:%G /etc/sallyport), want 750:root:sallyport"
grep -q '^ExecStart=/usr/bin/sallyport server ' /lib/systemd/system/sallyport-server.service ||
	fail "installed server unit does not run /usr/bin/sallyport"

# Verify the installed units (an instance of the template through a link).
tmp=$(mktemp -d)
ln -s /lib/systemd/system/sallyport-client@.service "$tmp/sallyport-client@ci.service"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
	/lib/systemd/system/sallyport-server.service "$tmp/sallyport-client@ci.service" 2>&1) ||
	fail "systemd-analyze verify: $out"
if grep -q sallyport <<<"$out"; then fail "systemd-analyze verify: $out"; fi
for u in /lib/systemd/system/sallyport-server.service "$tmp/sallyport-client@ci.service"; do
	systemd-analyze security --offline=true "$u" | tail -1
done

# The package starts nothing and applies no sysctl behind the admin's back.
if [ -d /run/systemd/system ]; then
	! systemctl is-active --quiet sallyport-server.service || fail "installing the package started the gateway"
	! systemctl is-enabled --quiet sallyport-server.service 2>/dev/null || fail "installing the package enabled the gateway"
fi

# --- The README's "First gateway", as written in the installed README. ---
# The shell block is run as is, with these stand-ins: $EDITOR makes the
# edit the README asks for (another pool, IPv6 on); systemctl and sysctl
# only record what they were asked (this machine's services and kernel
# settings are not the test's to change); `sallyport server status` needs a
# running gateway and is recorded too. Everything else runs for real.
steps=$(awk '/^## First gateway/{s=1; next} s && /^```sh$/{b=1; next} b && /^```$/{exit} b{print}' /usr/share/doc/sallyport/README.md)
[ -n "$steps" ] || fail "no shell block under '## First gateway' in the installed README"
grep -q 'sallyport pki init' <<<"$steps" && grep -q 'sallyport server check' <<<"$steps" ||
	fail "the README's first-gateway block no longer makes a PKI and checks the config:
$steps"
cat >"$tmp/editor" <<'EOF'
#!/bin/sh
# The README's edit: set the pool (and turn IPv6 on).
sed -i -e 's|^ipv4_pool = "10.8.0.0/24"|ipv4_pool = "172.16.40.0/22"|' \
	-e 's|^#ipv6_pool = "fd00:8::/64"|ipv6_pool = "fd00:8::/64"|' "$1"
grep -q '^ipv4_pool = "172.16.40.0/22"' "$1" || { echo "editor: the example's ipv4_pool line changed" >&2; exit 1; }
EOF
chmod +x "$tmp/editor"
made_etc=1
log="$tmp/first-gateway.log"
{
	echo 'set -e -x'
	echo 'systemctl() { echo "recorded: systemctl $*"; }'
	echo 'sysctl() { echo "recorded: sysctl $*"; }'
	echo 'sallyport() {'
	echo '	if [ "${1:-} ${2:-}" = "server status" ]; then echo "recorded: sallyport $*"; return 0; fi'
	echo '	command sallyport "$@"'
	echo '}'
	echo "$steps"
} >"$tmp/first-gateway.sh"
# A shell of its own, so set -e stops at the first failing step.
if ! EDITOR="$tmp/editor" bash "$tmp/first-gateway.sh" >"$log" 2>&1; then
	cat "$log" >&2
	fail "the README's first-gateway steps failed"
fi
cat "$log"
grep -q '^/etc/sallyport/server.toml: ok' "$log" || fail "server check in the README's steps did not say ok"
grep -Eq '^files read as user sallyport \(User= of (/usr)?/lib/systemd/system/sallyport-server.service\): ok' "$log" ||
	fail "server check as root did not check the files as the unit's user"
grep -q 'recorded: systemctl enable --now sallyport-server' "$log" || fail "the README no longer enables the service"

# What the steps left: exactly what the gateway reads is its group's.
for want in "/etc/sallyport/pki 750 root sallyport" "/etc/sallyport/pki/servers 750 root sallyport" \
	"/etc/sallyport/pki/servers/vpn.example.com.key 640 root sallyport" \
	"/etc/sallyport/pki/servers/vpn.example.com.crt 644 root root" "/etc/sallyport/pki/ca.crt 644 root root" \
	"/etc/sallyport/pki/crl.pem 644 root root" "/etc/sallyport/pki/root.key 600 root root" \
	"/etc/sallyport/pki/devices 700 root root" "/etc/sallyport/server.toml 640 root sallyport"; do
	set -- $want
	got="$(stat -c '%a %U %G' "$1")"
	[ "$got" = "$2 $3 $4" ] || fail "$1 is $got, want $2 $3 $4"
done
# And as the gateway's user itself, as the unit runs it.
as_gw=(setpriv --reuid=sallyport --regid=sallyport --init-groups --no-new-privs)
"${as_gw[@]}" /usr/bin/sallyport server check -c /etc/sallyport/server.toml ||
	fail "server check as user sallyport failed after the README's steps"
if "${as_gw[@]}" cat /etc/sallyport/pki/root.key >/dev/null 2>&1; then
	fail "user sallyport can read the CA key"
fi

# --- The admin guide's credential option: the key stays root 0600 and
# systemd hands it over (LoadCredential=). The drop-in goes to a unit
# directory of this test's (SYSTEMD_UNIT_PATH, read by server check as by
# systemd), not to this machine's /etc/systemd.
key=/etc/sallyport/pki/servers/vpn.example.com.key
chgrp root "$key" && chmod 0600 "$key"
if out=$(/usr/bin/sallyport server check 2>&1); then
	fail "server check passed with a key user sallyport cannot read: $out"
fi
grep -q "chgrp sallyport $key && chmod 0640 $key (or hand it over with LoadCredential=" <<<"$out" ||
	fail "server check did not name the fix for an unreadable key: $out"
mkdir -p "$tmp/units/sallyport-server.service.d"
printf '[Service]\nLoadCredential=server.key:%s\n' "$key" >"$tmp/units/sallyport-server.service.d/override.conf"
sed -i 's|^key = .*|key = "/run/credentials/sallyport-server.service/server.key"|' /etc/sallyport/server.toml
out=$(SYSTEMD_UNIT_PATH="$tmp/units:" /usr/bin/sallyport server check 2>&1) ||
	fail "server check with the key as a credential: $out"
grep -q '^files read as user sallyport' <<<"$out" || fail "credential check not read as sallyport: $out"
echo "pkgtest: README first gateway and credential option: ok"

# --- The README's "First laptop": the admin's block (issue, bundle) runs
# as written; the laptop's block installs the bundle as the profile acme
# in the package's /etc/sallyport, with systemctl recorded and `down`
# recorded too (it would look for a crashed client's kill switch and
# routes in this machine's own network). `status` runs for real: it only
# reads, and must find the profile by name.
laptop_blocks() { awk -v n="$1" '/^## First laptop/{s=1; next} /^## /{s=0} s && /^```sh$/{c++; b=(c==n); next} b && /^```$/{b=0} b{print}' /usr/share/doc/sallyport/README.md; }
admin_steps=$(laptop_blocks 1)
laptop_steps=$(laptop_blocks 2)
grep -q 'sallyport pki bundle' <<<"$admin_steps" && grep -q 'sallyport up\|sallyport-client@' <<<"$laptop_steps" ||
	fail "the README's first-laptop blocks no longer bundle a device and bring it up:
$admin_steps
$laptop_steps"
log="$tmp/first-laptop.log"
{
	echo 'set -e -x'
	echo 'cd "$1"'
	echo 'sudo() { "$@"; }'
	echo 'systemctl() { echo "recorded: systemctl $*"; }'
	echo 'sallyport() {'
	echo '	if [ "${1:-}" = down ]; then echo "recorded: sallyport $*"; return 0; fi'
	echo '	command sallyport "$@"'
	echo '}'
	echo "$admin_steps"
	echo "$laptop_steps"
} >"$tmp/first-laptop.sh"
mkdir "$tmp/laptop"
if ! bash "$tmp/first-laptop.sh" "$tmp/laptop" >"$log" 2>&1; then
	cat "$log" >&2
	fail "the README's first-laptop steps failed"
fi
cat "$log"
[ "$(stat -c '%a %U' /etc/sallyport/acme.toml)" = "600 root" ] || fail "the profile is $(stat -c '%a %U' /etc/sallyport/acme.toml), want 600 root"
grep -q '^no tunnel is up (start one with: sudo sallyport up NAME; profiles: acme)$' "$log" ||
	fail "sallyport status in the README's laptop steps did not list the profile acme"
out=$(/usr/bin/sallyport status acme 2>&1) && code=0 || code=$?
[ "$code" = 3 ] && [ "$out" = "acme: not up" ] || fail "sallyport status acme: exit $code, $out (want 3, acme: not up)"
SYSTEMD_UNIT_PATH="$tmp/units:" /usr/bin/sallyport server check >/dev/null || fail "server check fails with a laptop profile beside server.toml"
echo "pkgtest: README first laptop: ok"
rm -rf /etc/sallyport/pki /etc/sallyport/server.toml /etc/sallyport/acme.toml
made_etc=0

dpkg_wait --purge sallyport || fail "dpkg --purge failed"
for f in /usr/bin/sallyport /lib/systemd/system/sallyport-server.service /usr/lib/sysctl.d/60-sallyport.conf /usr/share/doc/sallyport /etc/sallyport; do
	[ ! -e "$f" ] || fail "dpkg --purge left $f"
done
echo "pkgtest: ok ($deb)"
