"""Shared pytest setup for every test layer."""
import logging

# Salt flushes its queued log records at interpreter exit, after pytest closed the streams;
# don't print a traceback for each of those lines.
logging.raiseExceptions = False
