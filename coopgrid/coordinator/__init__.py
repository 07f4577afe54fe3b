"""The coordinator: HTTP API, leasing, validation and result summaries."""
