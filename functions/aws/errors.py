"""AWS errors turned into FlowForge's own, by error code — never by message text."""

from __future__ import annotations

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from engine.errors import ConflictError, FlowForgeError, StoreUnavailableError

#: Error codes that mean "try again later": throttling and transient service faults.
RETRYABLE_CODES = frozenset(
    {
        # DynamoDB
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        # SQS (query and JSON protocols; ThrottlingException and ServiceUnavailable above)
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "InternalError",
        "InternalFailure",
        "KmsThrottled",
        "KMS.ThrottlingException",
    }
)

#: Network-level failures: the request may not have reached AWS at all.
CONNECTION_ERRORS = (BotoConnectionError, HTTPClientError)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def translate(exc: ClientError, operation: str) -> FlowForgeError | None:
    """FlowForge's error for ``exc``, or None when it should propagate unchanged."""
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return ConflictError(f"{operation}: condition not met")
    if code in RETRYABLE_CODES:
        return StoreUnavailableError(f"{operation}: {code}")
    return None


def unreachable(exc: Exception, operation: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"{operation}: {type(exc).__name__}")
