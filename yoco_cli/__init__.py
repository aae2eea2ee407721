"""yoco: You Only Condense Once -- resize condensed datasets to any IPC."""

__version__ = "0.1.0"
