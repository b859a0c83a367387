"""The registry: functions, their immutable versions, and activation records."""
