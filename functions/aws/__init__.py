"""AWS adapters shared by the functions: the DynamoDB run store, the SQS step queue and
the SQS batch plumbing of the step and DLQ handlers (plus the WebSocket push adapters).

Adapters take a client factory and build their client on first use, never at import time.
"""
