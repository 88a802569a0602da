#!/usr/bin/env bash
# Package check for CI (root): build the .deb, install it with dpkg on this
# machine, run the installed binary, verify the installed units with
# systemd-analyze, check the layout and that nothing was started, then purge
# it and check that its files are gone. Anything missing fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "pkgtest: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
for t in dpkg systemd-analyze make go; do
	command -v "$t" >/dev/null || fail "$t is not installed"
done
if dpkg -s sallyport >/dev/null 2>&1; then
	fail "a sallyport package is already installed here; not touching it"
fi

make deb
deb=$(ls -t bin/sallyport_*.deb | head -1)
[ -n "$deb" ] || fail "make deb made no package"
cleanup() { dpkg_wait --purge sallyport >/dev/null 2>&1 || true; }
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
	/usr/share/doc/sallyport/README.md /usr/share/doc/sallyport/examples/server.toml \
	/usr/share/doc/sallyport/examples/client.toml /usr/share/man/man1/sallyport.1 \
	/usr/share/man/man1/sallyport-server.1 /usr/share/bash-completion/completions/sallyport; do
	[ -e "$f" ] || fail "package did not install $f"
done
getent passwd sallyport >/dev/null || fail "postinst did not create the sallyport user"
getent group sallyport >/dev/null || fail "postinst did not create the sallyport group"
[ "$(stat -c %a:%G /etc/sallyport)" = "750:sallyport" ] || fail "/etc/sallyport is $(stat -c %a:%G /etc/sallyport), want 750:sallyport"
grep -q '^ExecStart=/usr/bin/sallyport server ' /lib/systemd/system/sallyport-server.service ||
	fail "installed server unit does not run /usr/bin/sallyport"

# Verify the installed units (an instance of the template through a link).
tmp=$(mktemp -d)
trap 'cleanup; rm -rf "$tmp"' EXIT
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

dpkg_wait --purge sallyport || fail "dpkg --purge failed"
for f in /usr/bin/sallyport /lib/systemd/system/sallyport-server.service /usr/lib/sysctl.d/60-sallyport.conf /usr/share/doc/sallyport; do
	[ ! -e "$f" ] || fail "dpkg --purge left $f"
done
echo "pkgtest: ok ($deb)"
