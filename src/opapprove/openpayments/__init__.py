"""The Open Payments protocol as a library: keys, signatures, models, amounts, a client.

Nothing here knows of the CLI or the store, and nothing here prints.
"""
