"""Debugging Open Payments approvals: ``doctor`` checks, signature checks, CI smoke runs.

Everything here returns data (checks, results, reports); the CLI prints it.
"""
