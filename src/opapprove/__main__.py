from opapprove.cli.startup import run

run()
