"""The streaming demo behind ``make demo``: embedded broker, workers, API and a live per-brand table."""
