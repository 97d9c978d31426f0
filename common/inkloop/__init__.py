"""inkloop: shared code for the three services (config, logging, gRPC helpers, generated stubs) and the CLI."""
