"""Automatic protection: policies (schedule, members, retention), the scheduler that
fires them, prune and notifications. Pure parts: `retention`, `schedule`."""
