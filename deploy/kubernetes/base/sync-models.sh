#!/bin/sh
# The init container: copy the model repository from object storage ($BERTSERVE_MODELS_URI, s3://bucket/prefix)
# into the pod's models volume. Credentials and endpoint come the AWS CLI's way (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, or the pod's workload identity).
set -eu
uri="${BERTSERVE_MODELS_URI:?set BERTSERVE_MODELS_URI to s3://bucket/prefix}"
target="${1:-/models}"
aws s3 sync --cli-connect-timeout 10 --cli-read-timeout 60 --only-show-errors --no-progress --delete "$uri" "$target"
# An empty or mistyped prefix syncs nothing: stop here, where the cause is plain, not in a server with no model.
if ! ls "$target"/*/config.pbtxt >/dev/null 2>&1; then
    echo "sync-models: no model (*/config.pbtxt) under $uri" >&2
    exit 1
fi
echo "sync-models: $uri -> $target:" $(ls "$target")
