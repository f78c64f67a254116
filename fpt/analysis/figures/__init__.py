"""One module per figure target (fpt.analysis.targets), each with build(ctx)."""
