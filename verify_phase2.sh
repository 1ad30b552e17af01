#!/usr/bin/env bash
# Checks a running credit-risk stack end to end, one line per check; stops at the first failure.
#
#   ./verify_phase2.sh              # the docker-compose stack on localhost
#   ./verify_phase2.sh --no-docker  # any stack (e.g. `make run`, or the native stack test)
#
# Environment: MLFLOW_URL (default http://localhost:5000), API_URL (default http://localhost:8000),
# API_KEY (sent as X-API-Key when set), PREDICTION_EXPERIMENT (default credit-risk-predictions),
# VERIFY_TIMEOUT seconds to wait for the prediction to reach MLflow (default 30),
# VERIFY_JSON=jq|python to force the JSON tool (default: jq when installed, else python3).
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD: an MLflow account that can read the
# predictions experiment (e.g. your UI account), sent to MLflow only; VERIFY_EXPECT_AUTH=0 for a
# server without authentication (`make run`): the anonymous-transition check is then skipped.
set -euo pipefail

MLFLOW_URL="${MLFLOW_URL:-http://localhost:5000}"
MLFLOW_URL="${MLFLOW_URL%/}"
API_URL="${API_URL:-http://localhost:8000}"
API_URL="${API_URL%/}"
API_KEY="${API_KEY:-}"
PREDICTION_EXPERIMENT="${PREDICTION_EXPERIMENT:-credit-risk-predictions}"
VERIFY_TIMEOUT="${VERIFY_TIMEOUT:-30}"
VERIFY_EXPECT_AUTH="${VERIFY_EXPECT_AUTH:-1}"
USE_DOCKER=1

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
  case "$arg" in
    --no-docker) USE_DOCKER=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

STEP=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The MLflow account goes into a curl config file in our private temp dir, never onto a command line
# (where `ps` would show it), and curl reads it only for requests to MLflow.
MLFLOW_AUTH=()
if [[ -n "${MLFLOW_TRACKING_USERNAME:-}" ]]; then
  umask 077
  user="${MLFLOW_TRACKING_USERNAME}:${MLFLOW_TRACKING_PASSWORD:-}"
  user="${user//\\/\\\\}"
  printf 'user = "%s"\n' "${user//\"/\\\"}" >"$WORK/mlflow.curlrc"
  unset user
  MLFLOW_AUTH=(-K "$WORK/mlflow.curlrc")
fi

step() { STEP=$((STEP + 1)); printf '%d. %s ... ' "$STEP" "$1"; }
ok() { echo "ok${1:+ ($1)}"; }
skip() { echo "skipped ($1)"; }
fail() {
  echo "FAILED"
  echo "verify_phase2: $1" >&2
  exit 1
}

# --- JSON: jq when present, python3 otherwise. Each query is written for both tools. ---------------
if [[ -n "${VERIFY_JSON:-}" ]]; then
  JSON_TOOL="$VERIFY_JSON"
elif command -v jq >/dev/null 2>&1; then
  JSON_TOOL=jq
else
  JSON_TOOL=python
fi
case "$JSON_TOOL" in
  jq) command -v jq >/dev/null 2>&1 || { echo "verify_phase2: VERIFY_JSON=jq but jq is not installed" >&2; exit 2; } ;;
  python) command -v python3 >/dev/null 2>&1 || { echo "verify_phase2: neither jq nor python3 is installed" >&2; exit 2; } ;;
  *) echo "verify_phase2: VERIFY_JSON must be jq or python, not '$JSON_TOOL'" >&2; exit 2 ;;
esac

# json FILE JQ_FILTER PYTHON_EXPRESSION: print the result; the Python expression sees the document as `d`.
# Both print "" for a missing value, and fail (non-zero) on a body that is not JSON.
json() {
  if [[ "$JSON_TOOL" == jq ]]; then
    jq -r "$2" "$1"
  else
    python3 - "$1" "$3" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
value = eval(sys.argv[2], {"d": d})
print("" if value is None else (str(value).lower() if isinstance(value, bool) else value))
PY
  fi
}

# http METHOD URL OUTFILE [BODY]: the HTTP status code; the body goes to OUTFILE ("000" when unreachable).
# ANONYMOUS=1 http ...: no MLflow credentials.
http() {
  local args=(-sS -o "$3" -w '%{http_code}' --max-time 10 -X "$1" "$2")
  # The key goes to the API only, never to MLflow; the MLflow account to MLflow only.
  if [[ -n "$API_KEY" && "$2" == "$API_URL"/* ]]; then args+=(-H "X-API-Key: $API_KEY"); fi
  if [[ ${#MLFLOW_AUTH[@]} -gt 0 && -z "${ANONYMOUS:-}" && "$2" == "$MLFLOW_URL"/* ]]; then args+=("${MLFLOW_AUTH[@]}"); fi
  if [[ $# -ge 4 ]]; then args+=(-H 'Content-Type: application/json' --data "$4"); fi
  curl "${args[@]}" 2>"$WORK/curl.err" || true
}

command -v curl >/dev/null 2>&1 || { echo "verify_phase2: curl is required" >&2; exit 2; }

echo "Verifying the credit-risk stack: MLflow $MLFLOW_URL, API $API_URL (JSON via $JSON_TOOL)"

# --- 1. Docker and Compose ---------------------------------------------------------------------------
step "Docker and Compose present"
if [[ "$USE_DOCKER" == 0 ]]; then
  skip "--no-docker"
else
  command -v docker >/dev/null 2>&1 || fail "docker not found (use --no-docker to check a stack not run by compose)"
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    fail "neither 'docker compose' nor 'docker-compose' found"
  fi
  ok "$(docker --version | head -n 1), compose $("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')"

  step "compose services running"
  if ! running="$("${COMPOSE[@]}" ps --services --filter status=running 2>"$WORK/compose.err")"; then
    skip "compose cannot list services: $(tail -n 1 "$WORK/compose.err"): checking the URLs only"
  elif [[ -z "$running" ]]; then
    skip "no service of this compose project runs here: checking the URLs only"
  else
    for service in mlflow api; do
      grep -qx "$service" <<<"$running" || fail "compose service '$service' is not running: docker-compose up -d $service"
    done
    ok "$(tr '\n' ' ' <<<"$running" | sed 's/ $//')"
  fi
fi

# --- 2. MLflow ---------------------------------------------------------------------------------------
step "MLflow healthy ($MLFLOW_URL/health)"
code="$(http GET "$MLFLOW_URL/health" "$WORK/body")"
[[ "$code" == 200 ]] || fail "MLflow at $MLFLOW_URL/health answered '$code' $(cat "$WORK/curl.err"): is the mlflow service up? (docker-compose logs mlflow)"
ok

# /health passes whatever the Host header; an API call shows whether the server accepts ours.
step "MLflow API accepts this host"
code="$(http GET "$MLFLOW_URL/api/2.0/mlflow/experiments/search?max_results=1" "$WORK/body")"
case "$code" in
  200) ok "${MLFLOW_TRACKING_USERNAME:+as $MLFLOW_TRACKING_USERNAME}" ;;
  401) fail "MLflow API answered 401: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account that may read the predictions experiment (e.g. MLFLOW_UI_USERNAME / MLFLOW_UI_PASSWORD from .env)" ;;
  *) fail "MLflow API answered $code: $(head -c 300 "$WORK/body"). If 403 'Invalid Host header', add this host to the server's --allowed-hosts" ;;
esac

# --- 3. API ------------------------------------------------------------------------------------------
step "API healthy ($API_URL/health/ready)"
code="$(http GET "$API_URL/health/ready" "$WORK/body")"
case "$code" in
  200) ok ;;
  000) fail "API at $API_URL is not reachable $(cat "$WORK/curl.err"): is the api service up? (docker-compose logs api)" ;;
  *) fail "API not ready (HTTP $code): $(head -c 300 "$WORK/body"). Is a version of the model in Production? (docker-compose up trainer)" ;;
esac

# --- 4. Model --------------------------------------------------------------------------------------
step "model served is in Production with a dataset hash"
code="$(http GET "$API_URL/model/info" "$WORK/info")"
[[ "$code" == 200 ]] || fail "/model/info answered $code: $(head -c 300 "$WORK/info")"
stage="$(json "$WORK/info" '.model_stage // empty' 'd.get("model_stage")')" || fail "/model/info is not JSON: $(head -c 300 "$WORK/info")"
[[ "$stage" == Production ]] || fail "model_stage is '$stage', expected 'Production'"
hash="$(json "$WORK/info" '.dataset_hash // empty' 'd.get("dataset_hash")')"
[[ -n "$hash" ]] || fail "/model/info carries no dataset_hash"
version="$(json "$WORK/info" '.model_version // empty' 'd.get("model_version")')"
name="$(json "$WORK/info" '.model_name // empty' 'd.get("model_name")')"
ok "$name version $version, dataset ${hash:0:12}…"

# --- 5. Prediction ---------------------------------------------------------------------------------
step "a prediction returns a result"
payload='{
  "RevolvingUtilizationOfUnsecuredLines": 0.766127,
  "age": 45,
  "NumberOfTime30_59DaysPastDueNotWorse": 2,
  "DebtRatio": 0.802982,
  "MonthlyIncome": 9120.0,
  "NumberOfOpenCreditLinesAndLoans": 13,
  "NumberOfTimes90DaysLate": 0,
  "NumberRealEstateLoansOrLines": 6,
  "NumberOfTime60_89DaysPastDueNotWorse": 0,
  "NumberOfDependents": 2
}'
code="$(http POST "$API_URL/predict" "$WORK/pred" "$payload")"
[[ "$code" == 200 ]] || fail "/predict answered $code: $(head -c 300 "$WORK/pred")"
prediction="$(json "$WORK/pred" '.prediction // empty' 'd.get("prediction")')"
probability="$(json "$WORK/pred" '.probability // empty' 'd.get("probability")')"
prediction_id="$(json "$WORK/pred" '.prediction_id // empty' 'd.get("prediction_id")')"
[[ "$prediction" == 0 || "$prediction" == 1 ]] || fail "prediction is '$prediction', expected 0 or 1: $(head -c 300 "$WORK/pred")"
[[ -n "$probability" ]] || fail "no probability in the answer: $(head -c 300 "$WORK/pred")"
[[ "$prediction_id" =~ ^([0-9a-f]+)-([1-9][0-9]*)$ ]] || fail "prediction_id is '$prediction_id', expected <process>-<sequence number>"
api_process="${BASH_REMATCH[1]}"
seq_no="${BASH_REMATCH[2]}"
# MLflow's step-range query takes 32-bit steps: an API process past a billion predictions is beyond it.
((${#seq_no} <= 9)) || fail "sequence number $seq_no is beyond what MLflow's step-range query takes; restart the API"
ok "prediction $prediction, probability $probability, id $prediction_id"

# --- 6. The prediction reaches MLflow ----------------------------------------------------------------
# The API logs each prediction as the metric `probability` at step = the sequence number of its
# prediction_id ("<process>-<seq>"), in a run tagged api_process=<process>: this looks for that very
# point and compares its value with the answer's, so no other prediction can pass for ours.

# Writes to FILE ($3) the `probability` logged at step $2 by API process $1, or nothing while there
# is none. (Not called in $(...): its `fail` must end the script, not a subshell.)
logged_probability() {
  local code exp_id run_ids query run
  : >"$3"
  code="$(http GET "$MLFLOW_URL/api/2.0/mlflow/experiments/get-by-name?experiment_name=$PREDICTION_EXPERIMENT" "$WORK/exp")"
  [[ "$code" == 404 ]] && return 0 # the API has not created the experiment yet
  [[ "$code" == 200 ]] || fail "MLflow experiments/get-by-name answered $code: $(head -c 300 "$WORK/exp")"
  exp_id="$(json "$WORK/exp" '.experiment.experiment_id' 'd["experiment"]["experiment_id"]')" ||
    fail "MLflow experiments/get-by-name did not answer JSON: $(head -c 300 "$WORK/exp")"
  code="$(http POST "$MLFLOW_URL/api/2.0/mlflow/runs/search" "$WORK/runs" \
    "{\"experiment_ids\": [\"$exp_id\"], \"filter\": \"tags.api_process = '$1'\", \"max_results\": 100}")"
  [[ "$code" == 200 ]] || fail "MLflow runs/search answered $code: $(head -c 300 "$WORK/runs")"
  run_ids="$(json "$WORK/runs" '[.runs[]?.info.run_id] | join(" ")' '" ".join(r["info"]["run_id"] for r in d.get("runs", []))')" ||
    fail "MLflow runs/search did not answer JSON: $(head -c 300 "$WORK/runs")"
  [[ -n "$run_ids" ]] || return 0
  # The endpoint the MLflow UI draws metric charts from: the one that selects a range of steps.
  query="metric_key=probability&start_step=$2&end_step=$2"
  for run in $run_ids; do query+="&run_ids=$run"; done
  code="$(http GET "$MLFLOW_URL/api/2.0/mlflow/metrics/get-history-bulk-interval?$query" "$WORK/points")"
  [[ "$code" == 200 ]] || fail "MLflow metrics/get-history-bulk-interval answered $code: $(head -c 300 "$WORK/points")"
  json "$WORK/points" \
    "[.metrics[]? | select((.step | tonumber) == $2) | .value][0] // empty" \
    "next((m['value'] for m in d.get('metrics', []) if int(m.get('step', 0)) == $2), None)" >"$3" ||
    fail "MLflow metrics/get-history-bulk-interval did not answer JSON: $(head -c 300 "$WORK/points")"
}

step "prediction $prediction_id logged in MLflow experiment '$PREDICTION_EXPERIMENT'"
deadline=$((SECONDS + VERIFY_TIMEOUT))
while :; do
  logged_probability "$api_process" "$seq_no" "$WORK/value"
  value="$(cat "$WORK/value")"
  if [[ -n "$value" ]]; then
    LC_ALL=C awk -v a="$value" -v b="$probability" 'BEGIN { d = a - b; exit !(d < 1e-12 && d > -1e-12) }' ||
      fail "MLflow holds probability $value at step $seq_no, the API answered $probability"
    ok "step $seq_no of API process $api_process, probability $value"
    break
  fi
  if ((SECONDS >= deadline)); then
    fail "no 'probability' at step $seq_no from API process $api_process in '$PREDICTION_EXPERIMENT' after ${VERIFY_TIMEOUT}s: is prediction logging on? (GET $API_URL/health shows the log backlog; docker-compose logs api)"
  fi
  sleep 1
done

# --- 7. Nobody anonymous moves a stage -----------------------------------------------------------------
# A model name nobody registers: even an open server changes nothing here, it just answers 404.
step "anonymous stage transition refused"
if [[ "$VERIFY_EXPECT_AUTH" == 0 ]]; then
  skip "VERIFY_EXPECT_AUTH=0: this server runs without authentication"
else
  code="$(ANONYMOUS=1 http POST "$MLFLOW_URL/api/2.0/mlflow/model-versions/transition-stage" "$WORK/anon" \
    '{"name": "verify-phase2-anonymous-probe", "version": "1", "stage": "Production", "archive_existing_versions": false}')"
  [[ "$code" == 401 ]] || fail "an anonymous transition-stage call answered $code, not 401: anyone who reaches $MLFLOW_URL can change what the API serves. Run the tracking server with --app-name basic-auth (docs/access-control.md)"
  ok "401"
fi

echo "All checks passed."
