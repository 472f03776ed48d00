"""Streaming worker: `mentions` -> score -> `sentiment`."""
