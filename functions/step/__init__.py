"""Step Lambda: executes one node per SQS step message."""
