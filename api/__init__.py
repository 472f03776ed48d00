"""HTTP API sidecar for ad-hoc predictions."""
