"""Tasks the end-to-end tests run: each records what happened in Redis (URL from $TEST_REDIS_URL)."""
