#!/usr/bin/env bash
# Audit every pinned dependency (runtime, tests, tracking-server image) for known vulnerabilities.
#
#   bench/audit.sh            (or: make audit)
#
# Exit codes:
#   0  every pin was audited and none has a known vulnerability
#   1  a pinned version has a known vulnerability, or a pin could not be audited (--strict)
#   3  the audit could not run: no vulnerability service answered, nothing was checked
#
# Before the real audit a canary is checked: jinja2 2.4.1 has published advisories, so a service
# that reports none for it is not answering (a PyPI mirror without the vulnerability data says
# "Dependency not found on PyPI" for every package, and pip-audit would then report "no known
# vulnerabilities" with exit 0 unless --strict).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
EXIT_UNAVAILABLE=3
REQUIREMENTS=(-r requirements.txt -r requirements-dev.txt -r mlflow/requirements.txt)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "jinja2==2.4.1" >"$tmp/canary.txt"

service_works() {
    # The canary's JSON report must name at least one vulnerability.
    "$PYTHON" -m pip_audit --vulnerability-service "$1" --requirement "$tmp/canary.txt" \
        --no-deps --disable-pip --progress-spinner off --timeout 10 --format json \
        >"$tmp/canary-$1.json" 2>"$tmp/canary-$1.err" || true
    "$PYTHON" - "$tmp/canary-$1.json" <<'EOF'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
deps = report.get("dependencies", report) if isinstance(report, dict) else report
sys.exit(0 if any(d.get("vulns") for d in deps) else 1)
EOF
}

for service in osv pypi; do
    if service_works "$service"; then
        echo "audit: using the '$service' vulnerability service"
        exec "$PYTHON" -m pip_audit --vulnerability-service "$service" --strict --progress-spinner off \
            "${REQUIREMENTS[@]}"
    fi
    echo "audit: the '$service' vulnerability service is not usable from here:" \
        "$(tail -n 1 "$tmp/canary-$service.err" 2>/dev/null | cut -c1-200)" >&2
done

echo "audit: NOT RUN: no vulnerability service (OSV, PyPI) answered with vulnerability data;" \
    "the pins in requirements*.txt and mlflow/requirements.txt were not checked" >&2
exit "$EXIT_UNAVAILABLE"
