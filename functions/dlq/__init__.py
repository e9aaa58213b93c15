"""DLQ Lambda: fails the runs whose step messages were given up on."""
