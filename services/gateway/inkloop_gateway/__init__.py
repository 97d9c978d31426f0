"""inkloop gateway service."""
