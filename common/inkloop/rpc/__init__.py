"""gRPC plumbing shared by the services: server setup, interceptors, error mapping, channels."""
