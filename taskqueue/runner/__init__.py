"""The runner process: spawns and replaces worker processes (runner), recovers dead workers' tasks
(recovery), promotes due delayed tasks (timer), fires periodic schedules (schedules), scales (autoscaler)
and reloads its YAML (reload). It never runs tasks itself."""
