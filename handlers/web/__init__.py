"""The heartbeat runtime's web app (ASGI): ``create_app`` and ``serve`` in :mod:`handlers.web.app`.

FastAPI, pydantic and uvicorn are imported only when an app is built or served, never by
importing this package.
"""
