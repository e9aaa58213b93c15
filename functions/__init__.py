"""FlowForge's Lambda functions (one folder each) and the AWS adapters they share."""
