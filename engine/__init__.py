"""Magnet runtime: records, shard store, teachers, rate limits, scheduler, CLI."""
