"""Back-end events: every step of a job's life, sent to analytics, spooled while it is unreachable."""
