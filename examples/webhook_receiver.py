"""A webhook receiver that verifies inkloop's Standard Webhooks signatures and deduplicates by id.

    .venv/bin/python examples/webhook_receiver.py --secret whsec_... --port 9000

Register it (`AdminService.CreateWebhookEndpoint`, url http://<host>:9000/hooks/inkloop) or name it as a
job's `webhook_url`; the secret is the endpoint's (returned once) or `GetJobWebhookSecret`'s. A gateway
calls a loopback or private address only when its `webhook-allowed-hosts` setting names it.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger("webhook-receiver")
#: The verified events received, first delivery of each id only.
EVENTS = web.AppKey("events", list)


def receiver(secret: str) -> web.Application:
    verifier = Webhook(secret)
    seen: set[str] = set()  # a real receiver keeps these in its database
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return web.Response(status=400, text="bad signature")
        message_id = request.headers["webhook-id"]
        if message_id not in seen:  # at-least-once: a retry after a lost answer has the same id
            seen.add(message_id)
            app[EVENTS].append(event)
            log.info("%s %s", event["type"], event["data"]["job_id"])
        return web.Response(status=204)

    app[EVENTS] = []
    app.router.add_post("/hooks/inkloop", hook)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, default=9000)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    web.run_app(receiver(arguments.secret), host="127.0.0.1", port=arguments.port)
