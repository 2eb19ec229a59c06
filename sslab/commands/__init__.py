"""sslab.commands: CLI subcommands registered in COMMANDS; discovered by sslab.core.plugins.load_all()."""
