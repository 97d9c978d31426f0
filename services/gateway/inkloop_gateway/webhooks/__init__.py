"""Signed webhooks of job outcomes, as Standard Webhooks specifies them (the way Stripe and Svix do).

`endpoints`: each tenant's registered endpoints and the secret of jobs' own webhook URLs. `targets`:
which URLs the gateway may call (no loopback, private, link-local or metadata addresses unless
allowed). `outbox`: the durable deliveries with every attempt, in the job store's database (SQLite or
Redis). `deliverer`: the loop that signs, sends and retries them.
"""
