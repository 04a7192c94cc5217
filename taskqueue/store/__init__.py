"""Everything that knows Redis: key names (keys), Lua scripts (lua/, scripts), connections, the one enqueue
path (producer) and the task-state scripts (broker). Importing the package imports nothing heavy."""
