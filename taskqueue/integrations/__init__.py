"""Optional integrations with other programs: `asgi` (FastAPI, Starlette, any ASGI server) and `aiohttp`
mount the runner's HTTP API in a web app. Each imports only what it needs, when it is imported itself."""
