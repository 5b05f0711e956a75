#!/usr/bin/env bash
# fuzz.sh TIME [OUT]: runs every go-fuzz target for TIME each (e.g. 10s in
# CI, 5m by hand) and prints one line per target: executions, new inputs
# kept, crashers. A crasher fails the run; go test writes its input to the
# package's testdata/fuzz/<Target>/ — commit it with the fix, as a
# regression seed.
set -uo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
out=${2:-}
targets=(
  "./auth FuzzVerify"
  "./stream FuzzCheckOffer"
  "./stream FuzzParseTrickle"
  "./server FuzzClientMessage"
  "./server FuzzConfig"
  "./server FuzzConsult"
  "./capture FuzzSpec"
  "./capture FuzzRedact"
  "./capture FuzzMask"
  "./capture/internal/igtl FuzzReadMessage"
  "./replay FuzzTimelineLines"
  "./replay FuzzSegmentIndex"
  "./replay FuzzInit"
  "./replay FuzzRecoverDir"
  "./audit FuzzScan"
  "./eval FuzzCOCO"
)
# The recovery target writes a library per input: on tmpfs its fsyncs cost
# nothing, which is what lets it reach useful counts.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
fail=0
printf '%-22s %-10s %14s %8s %s\n' target package execs new result
for t in "${targets[@]}"; do
  set -- $t
  log=$(mktemp)
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$time" -timeout 0 -parallel 2 "$1" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  new=$(grep -o 'new interesting: [0-9]*' "$log" | tail -1 | cut -d' ' -f3)
  res=ok
  if [ $rc -ne 0 ]; then res=FAIL; fail=1; sed 's/^/    /' "$log" | tail -30; fi
  line=$(printf '%-22s %-10s %14s %8s %s' "$2" "$1" "${execs:-?}" "${new:-?}" "$res")
  echo "$line"
  [ -n "$out" ] && echo "$line" >>"$out"
  rm -f "$log"
done
exit $fail
