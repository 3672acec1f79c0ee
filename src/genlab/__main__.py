from genlab.cli import entry

entry()
