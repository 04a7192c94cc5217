"""The worker process (`python -m taskqueue.worker`): take tasks with free slots (worker), run and settle
them (execute, threads), keep a lease, retire atomically. Started by the runner, never by users."""
