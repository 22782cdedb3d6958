#!/bin/sh
# Export the model for the triton service: the Hugging Face folder mounted at $BERTSERVE_INPUT if it
# holds one, else the default all-MiniLM-L6-v2. Options: arguments, then $BERTSERVE_EXPORT_ARGS.
set -eu
input="${BERTSERVE_INPUT:-/input}"
if [ -f "$input/config.json" ]; then
    set -- "$input" "$@"
fi
# shellcheck disable=SC2086  # BERTSERVE_EXPORT_ARGS is a list of options
exec bertserve export --repository "${BERTSERVE_REPOSITORY:-/models}" \
    --name "${BERTSERVE_MODEL_NAME:-all-MiniLM-L6-v2}" --overwrite "$@" ${BERTSERVE_EXPORT_ARGS:-}
