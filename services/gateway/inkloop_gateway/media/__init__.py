"""Where generated images live: content-addressed files per tenant, signed download URLs."""
