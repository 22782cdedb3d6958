#!/bin/sh
# Upload an exported model repository to object storage, where the pods' init container reads it
# (deploy/kubernetes/base/sync-models.sh), or Triton itself (--model-repository=s3://...).
#   deploy/upload-models.sh REPOSITORY s3://bucket/prefix
# The AWS CLI's own settings apply: AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL
# for MinIO and other S3-compatible stores.
set -eu
usage="usage: upload-models.sh REPOSITORY s3://bucket/prefix"
repository="${1:?$usage}"
uri="${2:?$usage}"
uri="${uri%/}"
if ! ls "$repository"/*/config.pbtxt >/dev/null 2>&1; then
    echo "upload-models: $repository holds no model (*/config.pbtxt); export one with bertserve export" >&2
    exit 1
fi
aws s3 sync --cli-connect-timeout 10 --cli-read-timeout 60 --only-show-errors --no-progress --delete --exclude '*__pycache__*' "$repository" "$uri"
# Object storage has no empty folders, and an ensemble's version folder (1/) is empty: Triton refuses an ensemble
# without one ("at least one version must be available"). A file in each keeps them.
empty="$(mktemp)"
trap 'rm -f "$empty"' EXIT
(cd "$repository" && find . -mindepth 1 -type d -empty) | while read -r folder; do
    aws s3 cp --cli-connect-timeout 10 --cli-read-timeout 60 --only-show-errors --no-progress "$empty" "$uri/${folder#./}/.keep"
done
echo "upload-models: $repository -> $uri"
