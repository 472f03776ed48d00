"""The reputation stage: per-brand event-time windows judged once for the whole worker group."""
