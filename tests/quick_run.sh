#!/usr/bin/env bash
# The seed's smoke test, against a running local stack (`make run` in another terminal):
# upload the summarization graph, run it in the foreground, print its final state and logs.
#   FLOWFORGE_ENDPOINT=http://127.0.0.1:3000 (default) — any stack with auth off.
set -euo pipefail
cd "$(dirname "$0")/.."

API="${FLOWFORGE_ENDPOINT:-http://127.0.0.1:3000}"
GRAPH=workflows/graphs/summarization.json
STATE=workflows/graphs/summarization.state.json
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python

if ! curl -s -o /dev/null "$API/graphs"; then
  echo "cannot reach $API — is \`make run\` running?" >&2
  exit 1
fi

echo "== POST $API/graph/create ($GRAPH)"
created=$(curl -sS --fail-with-body -X POST "$API/graph/create" -H 'content-type: application/json' --data-binary "@$GRAPH")
echo "$created" | $PY -m json.tool
graph_id=$(echo "$created" | $PY -c 'import json, sys; print(json.load(sys.stdin)["graph_id"])')

echo "== POST $API/graph/run (foreground, state from $STATE)"
result=$(curl -sS --fail-with-body -X POST "$API/graph/run" -H 'content-type: application/json' \
  --data-binary "{\"graph_id\": \"$graph_id\", \"state\": $(cat "$STATE")}")
run_id=$(echo "$result" | $PY -c 'import json, sys; print(json.load(sys.stdin)["run_id"])')

# A foreground run answers 202 if it is still going after ~25 s: poll until it is done.
while [ "$(echo "$result" | $PY -c 'import json, sys; print(json.load(sys.stdin).get("done", False))')" != "True" ]; do
  sleep 1
  result=$(curl -sS --fail-with-body "$API/graph/state/$run_id")
done

echo "== final state of run $run_id"
echo "$result" | $PY -c 'import json, sys; r = json.load(sys.stdin); print(json.dumps({k: r[k] for k in ("run_id", "status", "error", "state")}, indent=2, ensure_ascii=False))'
echo "== logs"
echo "$result" | $PY -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["logs"], indent=2, ensure_ascii=False))'
