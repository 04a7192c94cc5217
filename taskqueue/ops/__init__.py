"""How people and tools operate a deployment: the command line (cli, commands), the shared operations
behind it and HTTP (admin), the HTTP server (web, health, metrics, static/dashboard.html) and logging."""
