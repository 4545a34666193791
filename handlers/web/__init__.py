"""The heartbeat runtime's web app (ASGI): ``create_app`` and ``serve`` in :mod:`active_data_flow.handlers.web.app`.

FastAPI, pydantic and uvicorn are imported only when an app is built or served, never by
importing this package.
"""
