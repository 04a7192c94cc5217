"""Example user tasks. Name them in the YAML as `jobs.<module>:<function>`."""
