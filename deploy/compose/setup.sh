#!/bin/sh
# One-shot setup of the compose demo (compose.yaml's 'setup' service), safe to run again:
#   - the schema and the admin-token secret (cascade init migrates an existing database);
#   - one node per child, its config file written by init --child --output (mode 0600) into
#     $CHILD_CONFIG_DIR, skipped when the file is there;
#   - the feed server's sample feeds (existing ids are skipped) and a task 'demo' every five
#     minutes over all of them (kept when it exists).
set -eu

CHILD_CONFIG_DIR=${CHILD_CONFIG_DIR:-/config}
FEEDS_URL=${FEEDS_URL:-http://feeds:8900}
CHILDREN=${CHILDREN:-child-1 child-2}
CHILD_CAPACITY=${CHILD_CAPACITY:-2}

cascade init

for name in $CHILDREN; do
    if [ ! -f "$CHILD_CONFIG_DIR/$name.yaml" ]; then
        cascade init --child "$name" --capacity "$CHILD_CAPACITY" \
            --output "$CHILD_CONFIG_DIR/$name.yaml"
    fi
done

feeds_file=$(mktemp)
trap 'rm -f "$feeds_file"' EXIT
python - "$FEEDS_URL" >"$feeds_file" <<'PY'
import sys

import yaml

from cascade_cli.demo.server import manifest

base = sys.argv[1].rstrip("/")
feeds = [{"id": m["id"], "mp_name": m["mp_name"], "kind": m["kind"],
          "url": f"{base}/{m['file']}"} for m in manifest()]
sys.stdout.write(yaml.safe_dump(feeds, allow_unicode=True, sort_keys=False))
PY
cascade feeds import "$feeds_file" --skip-existing

if ! cascade tasks show demo >/dev/null 2>&1; then
    ids=$(python -c 'from cascade_cli.demo.server import manifest
print(",".join(m["id"] for m in manifest()))')
    cascade tasks add demo --feeds "$ids" --cron "*/5 * * * *"
fi
echo "setup done: children $CHILDREN, task demo"
