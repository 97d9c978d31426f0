"""The ways into the gateway: gRPC servicers, the HTTP app (page, bridge, downloads, collect, dashboard).

Thin glue: each translates a call into domain calls (`jobs`, `admission`, `media`) and back.
"""
