"""The REST API under /api, a FastAPI app mounted with ``rx.App(api_transformer=...)``."""
