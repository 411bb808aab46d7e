#!/usr/bin/env bash
# The load test with faults, run longer than CI does: a steady mix of creates, views and
# payments from 4 workers while Redis (AOF everysec) is killed with SIGKILL and restarted at
# a third and two thirds of the run. Prints requests, answers by status, receipts, approvals,
# double charges and lost links, and fails if any invariant breaks.
#   bench/load-with-faults.sh          # 120 s
#   bench/load-with-faults.sh 600      # 10 min
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
PAYLINK_FAULT_LOAD_SECONDS="$seconds" cargo test --release --test api \
  load::a_steady_load_survives_two_redis_restarts -- --nocapture 2>&1 | grep -E "load with faults|test result|panicked"
