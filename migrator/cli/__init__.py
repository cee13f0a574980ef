"""The `graphrag-migrate` command line: thin typer commands over `migrator.app.api`."""
