"""Durable jobs (SQLite or Redis), the result cache, and running them on inference replicas: dispatch,
replica health, progress watchers and the change relay between gateway replicas."""
