"""Sandboxes: where replicas run. The seam is ``api.SandboxBackend``."""
