#!/usr/bin/env bash
# opapprove in CI: the embedded sandbox, a seller key, `smoke --junit`, one full headless
# approval, and artifacts for the CI run to keep.
#
#   OUT=opapprove-artifacts SANDBOX_PORT=4000 bash examples/ci/opapprove-ci.sh
#
# Needs opapprove on PATH (or OPAPPROVE=/path/to/opapprove), curl and jq. Exits 0 when every
# step passed, else with the failing command's exit code (`opapprove --help` lists them).
# $OUT gets: smoke.xml (JUnit), quote.json, finish.json and sandbox.log. The
# seller's private key and the store (it holds access tokens) stay in a scratch folder that
# is removed at the end, never in $OUT.
set -euo pipefail

OPAPPROVE=${OPAPPROVE:-opapprove}
OUT=${OUT:-opapprove-artifacts}
PORT=${SANDBOX_PORT:-4000}
SANDBOX="http://127.0.0.1:${PORT}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/opapprove-ci.XXXXXX")

# Nothing from the machine's own opapprove config: the store and settings of this run only.
export OPAPPROVE_STORE="$WORK/opapprove.db"
export OPAPPROVE_CONFIG="$WORK/config.toml"
: > "$OPAPPROVE_CONFIG"

SANDBOX_PID=""
cleanup() {
  if [ -n "$SANDBOX_PID" ]; then
    kill "$SANDBOX_PID" 2>/dev/null || true
    wait "$SANDBOX_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '== %s\n' "$*"; }

step "seller key (the sandbox publishes it on $SANDBOX/seller)"
"$OPAPPROVE" seller keygen --out "$WORK/seller.pem" --kid ci-seller \
  --seller default-seller --wallet "$SANDBOX/seller" > /dev/null

step "sandbox on $SANDBOX"
# --wait 0: the sandbox answers a grant continuation at once instead of Rafiki's 5 s.
"$OPAPPROVE" sandbox --port "$PORT" --wait 0 > "$OUT/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for _ in $(seq 1 150); do
  if curl -fsS -o /dev/null "$SANDBOX/buyer" 2>/dev/null; then break; fi
  if ! kill -0 "$SANDBOX_PID" 2>/dev/null; then
    echo "the sandbox exited:" >&2; cat "$OUT/sandbox.log" >&2; exit 4
  fi
  sleep 0.1
done
if ! curl -fsS -o /dev/null "$SANDBOX/buyer"; then
  echo "the sandbox did not answer within 15 s:" >&2; cat "$OUT/sandbox.log" >&2; exit 4
fi

step "smoke test up to the approval URL (JUnit in smoke.xml)"
"$OPAPPROVE" smoke --buyer "$SANDBOX/buyer" --amount 0.01 --junit "$OUT/smoke.xml"

step "full flow: quote, headless approval, finish"
"$OPAPPROVE" --json quote start --offer ci-order-1 --buyer "$SANDBOX/buyer" --amount 5.00 \
  > "$OUT/quote.json"
APPROVAL_URL=$(jq -er .approvalUrl "$OUT/quote.json")
# What the buyer's click does, over the sandbox's operator API (`opapprove sandbox approve
# URL` is the same as a command); the answer is the finish URL the wallet redirects to.
FINISH_URL=$(jq -n --arg url "$APPROVAL_URL" '{redirect: $url}' \
  | curl -fsS -H 'Content-Type: application/json' --data @- "$SANDBOX/_admin/approve" \
  | jq -er .finish_url)
"$OPAPPROVE" --json finish "$FINISH_URL" > "$OUT/finish.json"
STATE=$(jq -er .state "$OUT/finish.json")
if [ "$STATE" != completed ]; then
  echo "the payment ended '$STATE', not completed (see finish.json)" >&2; exit 5
fi
step "passed; artifacts in $OUT"
