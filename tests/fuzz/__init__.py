"""Property-based fuzzing of every RPC and HTTP endpoint; the strategies are shared with bench/fuzz.py."""
