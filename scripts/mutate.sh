#!/usr/bin/env bash
# mutate.sh — `make mutate`: mutation testing of the packet and trust rules
# with gremlins (github.com/go-gremlins/gremlins, pinned below). Gremlins
# changes one operator at a time in the code the tests cover (a < turned
# into <=, a == into !=, a - into +, ...) and runs the package's tests: a
# mutant the tests still pass ("lived") is a behaviour no test checks.
# Efficacy = killed / (killed + lived).
#
# Targets (each must reach MUTATE_THRESHOLD percent, default 85):
#   server/conntrack   the flow table
#   server/policy      policies, compiled filters, explain
#   tunnel/packet      header parsing
#   server (trust.go, verdict.go only)
#                      the trust decision and the packet verdicts; every
#                      mutant runs the whole server test suite, so this one
#                      takes the longest (about 15 minutes on 2 CPUs)
#
# Not part of `make test`: it runs the tests hundreds of times. Gremlins is
# installed into a temporary GOBIN with `go install` (module proxy) unless
# GREMLINS names a binary. MUTATE_ONLY="server/policy tunnel/packet" runs a
# subset; MUTATE_WORKERS sets parallel mutants (default 1, the machine is
# shared). Results go to MUTATE_OUT (default bin/mutate) as gremlins JSON.

set -euo pipefail

VERSION=v0.6.0
THRESHOLD=${MUTATE_THRESHOLD:-85}
WORKERS=${MUTATE_WORKERS:-1}
ONLY=${MUTATE_ONLY:-"server/conntrack server/policy tunnel/packet server"}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${MUTATE_OUT:-$REPO/bin/mutate}
cd "$REPO"
mkdir -p "$OUT"

GREMLINS=${GREMLINS:-}
if [ -z "$GREMLINS" ]; then
  gobin=$(mktemp -d)
  trap 'rm -rf "$gobin"' EXIT
  echo "mutate: installing gremlins $VERSION" >&2
  GOBIN=$gobin go install "github.com/go-gremlins/gremlins/cmd/gremlins@$VERSION"
  GREMLINS=$gobin/gremlins
fi

# Coverage is gathered from a real run (not the test cache), so gremlins'
# per-mutant timeout, a multiple of that run's time, is not too short.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"

fail=0
declare -A result
for target in $ONLY; do
  args=(unleash --workers "$WORKERS" --timeout-coefficient 10 --threshold-efficacy "$THRESHOLD" -o "$OUT/${target//\//-}.json")
  if [ "$target" = server ]; then
    # Only the trust decision and the verdicts: every other file of the
    # package, and its sub-packages (their own targets), are left alone.
    others=$(cd server && ls *.go | grep -v '_test\.go$' | grep -vx 'trust.go' | grep -vx 'verdict.go' | sed 's/\.go$//' | paste -sd'|')
    args+=(-E "(^|/)($others)\\.go\$" -E "(^|/)(policy|conntrack|metrics)/")
  fi
  echo "== $target" >&2
  log="$OUT/${target//\//-}.log"
  if "$GREMLINS" "${args[@]}" "./$target" >"$log" 2>&1; then status=ok; else status=BELOW; fail=1; fi
  eff=$(grep -o 'Test efficacy: [0-9.]*%' "$log" | tail -1 | cut -d' ' -f3)
  counts=$(grep -o 'Killed: [0-9]*, Lived: [0-9]*' "$log" | tail -1)
  # A timed-out mutant counts as neither; many of them mean the timeout is
  # wrong, not that the tests are good.
  if timedout=$(grep -o 'Timed out: [0-9]*' "$log" | tail -1 | cut -d' ' -f3) && [ "${timedout:-0}" -gt 0 ]; then
    counts="$counts, timed out: $timedout"
  fi
  grep 'LIVED' "$log" >&2 || true
  result[$target]="$(printf '%-18s %8s  %-24s %s' "$target" "${eff:-?}" "${counts:-?}" "$status")"
done

echo
printf '%-18s %8s  %-24s %s\n' target efficacy mutants "(threshold ${THRESHOLD}%)"
for target in $ONLY; do echo "${result[$target]}"; done
exit $fail
