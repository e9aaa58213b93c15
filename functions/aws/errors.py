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

#: TransactWriteItems cancellation reasons worth a retry. ``TransactionConflict`` is
#: here, not in the conflict set: a concurrent transaction on the item may itself fail,
#: so the step must be retried (its condition then decides), never assumed done.
RETRYABLE_REASONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict", "RequestLimitExceeded"}
)

#: Network-level failures: the request may not have reached AWS at all.
CONNECTION_ERRORS = (BotoConnectionError, HTTPClientError)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def cancellation_codes(exc: ClientError) -> set[str]:
    """The per-item reason codes of a TransactionCanceledException."""
    reasons = exc.response.get("CancellationReasons") or []
    return {reason.get("Code", "") for reason in reasons}


def translate(exc: ClientError, operation: str) -> FlowForgeError | None:
    """FlowForge's error for ``exc``, or None when it should propagate unchanged."""
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return ConflictError(f"{operation}: condition not met")
    if code == "TransactionCanceledException":
        reasons = cancellation_codes(exc)
        if "ConditionalCheckFailed" in reasons:
            return ConflictError(f"{operation}: condition not met")
        if reasons & RETRYABLE_REASONS:
            return StoreUnavailableError(f"{operation}: transaction cancelled ({', '.join(sorted(reasons))})")
        return None
    if code in RETRYABLE_CODES:
        return StoreUnavailableError(f"{operation}: {code}")
    return None


def unreachable(exc: Exception, operation: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"{operation}: {type(exc).__name__}")
