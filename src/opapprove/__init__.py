"""opapprove: run and debug Open Payments interactive payment approvals."""

__version__ = "0.1.0"
