"""One module per phase of the migration plan; each exposes build(settings, options) -> Phase."""
