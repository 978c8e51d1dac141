#!/usr/bin/env bash
# Validates the deployment artifacts under deploy/:
#   1. promtool check rules  deploy/prometheus/alerts.yml
#   1b. promtool test rules  deploy/prometheus/alerts_test.yml (alert unit tests)
#   2. promtool check config deploy/compose/prometheus.yml (loads the rules too)
#   3. every *.yml / *.yaml under deploy/ parses as YAML (python3 + PyYAML)
#   4. every *.json under deploy/ parses as JSON (python3 -m json.tool)
# Exits non-zero on the first failure. Needs promtool (Debian: apt-get install
# prometheus) and python3 with PyYAML (pip install pyyaml).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DEPLOY_DIR"

fail() { echo "validate.sh: FAIL: $*" >&2; exit 1; }

command -v promtool >/dev/null 2>&1 \
  || fail "promtool not found (apt-get install prometheus, or use a Prometheus release tarball)"
command -v python3 >/dev/null 2>&1 || fail "python3 not found"
python3 -c 'import yaml' 2>/dev/null || fail "python3 module yaml missing (pip install pyyaml)"

echo "== promtool check rules prometheus/alerts.yml"
promtool check rules prometheus/alerts.yml || fail "alert rules"

echo "== promtool test rules prometheus/alerts_test.yml"
promtool test rules prometheus/alerts_test.yml || fail "alert rule tests"

echo "== promtool check config compose/prometheus.yml"
promtool check config compose/prometheus.yml || fail "prometheus config"

echo "== YAML parse"
yaml_count=0
while IFS= read -r -d '' f; do
  python3 -c 'import sys, yaml
with open(sys.argv[1]) as fh:
    list(yaml.safe_load_all(fh))' "$f" || fail "YAML: $f"
  echo "  ok  $f"
  yaml_count=$((yaml_count + 1))
done < <(find . -type f \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)
[ "$yaml_count" -gt 0 ] || fail "no YAML files found"

echo "== JSON parse"
json_count=0
while IFS= read -r -d '' f; do
  python3 -m json.tool "$f" >/dev/null || fail "JSON: $f"
  echo "  ok  $f"
  json_count=$((json_count + 1))
done < <(find . -type f -name '*.json' -print0 | sort -z)
[ "$json_count" -gt 0 ] || fail "no JSON files found"

echo "validate.sh: OK ($yaml_count YAML, $json_count JSON files)"
