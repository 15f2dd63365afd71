#!/bin/sh
# SeaweedFS with one identity, the platform's key pair from the environment (signed requests only).
set -eu
cat > /tmp/identities.json <<JSON
{"identities": [{"name": "fluxo",
  "credentials": [{"accessKey": "${FLUXO_S3_ACCESS_KEY}", "secretKey": "${FLUXO_S3_SECRET_KEY}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed mini -dir=/data -s3.port=8333 -s3.config=/tmp/identities.json \
  -webdav=false -admin.ui=false -master.telemetry=false
