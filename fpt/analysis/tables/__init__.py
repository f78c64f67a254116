"""One module per table target (fpt.analysis.targets), each with build(ctx)."""
