"""The decoded data on disk: sharded, read by index (see shard.py and build.py)."""
