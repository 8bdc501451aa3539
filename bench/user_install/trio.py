"""Stands in for trio in the benches' child processes: a user install of opapprove has none.

httpcore imports trio whenever it can (~80 ms); in this checkout's environment trio is
present only because selenium (a test dependency) needs it. See ``common.clean_env``.
"""

raise ImportError("trio is hidden from the benches (bench/user_install/trio.py)")
