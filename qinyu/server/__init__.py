"""The HTTP/WebSocket server (FastAPI)."""
