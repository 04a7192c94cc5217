"""`python -m bench --peers`: the same workload through other task queues, each in its own venv.

Layout:
- `drive.py` and `common.py` run *inside* a peer's venv (they import only the standard library, redis-py
  and the peer): `python -m bench.peers.drive PEER ACTION ...`.
- `<peer>_peer.py`: one adapter per peer (the contract is in `drive.py`).
- `requirements/<peer>.txt`: each peer's pinned packages (one venv per peer: their redis-py pins conflict).
- The harness side (our venv) starts the private Redis, calls the actions, starts and measures the workers.
"""
