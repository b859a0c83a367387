"""Build: bundle → runnable version (safe unpack, dependency layer, handler check)."""
