"""inkloop inference service."""
