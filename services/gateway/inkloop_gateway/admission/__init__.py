"""What a request must pass before it becomes a job: API keys and roles, rate limits, validation, prompt
safety, and the sticky A/B variant that decides its model."""
