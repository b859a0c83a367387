"""Runtimes: the programs that run inside a sandbox, and the host side of their protocol."""
