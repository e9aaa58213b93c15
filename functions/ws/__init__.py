"""WebSocket Lambda: connections, subscriptions and log replay (DESIGN.md §6)."""
