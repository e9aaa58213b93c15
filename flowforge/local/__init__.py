"""The local stack: the whole serverless app on one machine, no Docker, no AWS account.

``flowforge dev`` (``make run``) starts an embedded moto server as AWS, creates the table
and queues from template.yaml, and runs the unchanged Lambda handlers in this process
behind a local API Gateway (HTTP, WebSocket, ``@connections``), an SQS event source
mapping, a DynamoDB stream poller and the sweeper's schedule. Every DynamoDB write is
journaled under ``.flowforge/`` before moto answers it, so what the stack acknowledged —
graphs, runs, log entries — survives a restart, even ``kill -9``, and runs in flight resume.
"""
