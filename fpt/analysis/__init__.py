"""Tables and figures, built only from collected metrics (and saved attention arrays)."""
