#!/usr/bin/env bash
# fuzz.sh TIME [OUT]: runs every go-fuzz target for TIME each (e.g. 10s in
# CI, 5m by hand) and prints one line per target: executions, new inputs
# kept, crashers. A crasher fails the run; go test writes its input to the
# package's testdata/fuzz/<Target>/ — commit it with the fix, as a
# regression seed.
#
# Go's fuzz coordinator can end a duration-bounded run with a bare "context
# deadline exceeded" when a starved worker misses the stop deadline (a race
# at the -fuzztime boundary on a loaded machine, not an input: a hanging or
# crashing input is always written out as "Failing input written to ...").
# Such a run is repeated once; if the repeat ends the same way the target is
# reported as "deadline" and does not fail the run, since nothing was found
# to reproduce. Anything else non-zero fails.
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
run_target() { # pkg target log
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$time" -timeout 0 -parallel 2 "$1" >"$3" 2>&1
}
# bare_deadline log: the run failed only on the coordinator's deadline.
bare_deadline() {
  grep -q 'context deadline exceeded' "$1" &&
    ! grep -q -e 'Failing input written' -e 'panic:' -e 'fuzzing process hung' "$1"
}
for t in "${targets[@]}"; do
  set -- $t
  log=$(mktemp)
  run_target "$1" "$2" "$log"
  rc=$?
  res=ok
  if [ $rc -ne 0 ] && bare_deadline "$log"; then
    echo "    $2: coordinator deadline race, no input written; running it again" >&2
    run_target "$1" "$2" "$log"
    rc=$?
    res="ok (2nd run)"
    if [ $rc -ne 0 ] && bare_deadline "$log"; then rc=0; res="deadline (twice, no input)"; fi
  fi
  execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  new=$(grep -o 'new interesting: [0-9]*' "$log" | tail -1 | cut -d' ' -f3)
  if [ $rc -ne 0 ]; then res=FAIL; fail=1; sed 's/^/    /' "$log" | tail -30; fi
  line=$(printf '%-22s %-10s %14s %8s %s' "$2" "$1" "${execs:-?}" "${new:-?}" "$res")
  echo "$line"
  [ -n "$out" ] && echo "$line" >>"$out"
  rm -f "$log"
done
exit $fail
