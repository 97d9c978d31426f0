"""inkloop analytics service."""
