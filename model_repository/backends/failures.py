"""How the backends answer a batch that failed unexpectedly: the details to the server log, none to clients.

Imported inside tritonserver only (it needs `triton_python_backend_utils`).
"""

import traceback

import triton_python_backend_utils as pb_utils


def answer_failure(requests, model):
    """One error response per request, naming no file, path or stack frame."""
    pb_utils.Logger.log_error(f"{model} failed: {traceback.format_exc()}")
    error = pb_utils.TritonError(f"the {model} failed on this request; the server log has the details")
    return [pb_utils.InferenceResponse(error=error) for _ in requests]
