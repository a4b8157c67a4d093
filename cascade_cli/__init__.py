"""Cascade: parent/child task distribution for feed crawling."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
