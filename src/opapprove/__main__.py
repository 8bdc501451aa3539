from opapprove.cli.main import run

run()
