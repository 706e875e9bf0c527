"""The `policylake` command line: one typer application, one error mapping (`app.main`)."""
