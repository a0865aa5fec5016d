"""Import Flower through securefl's adapter, which silences the one DeprecationWarning
that flwr 1.42's import of typer raises from click (third-party, at import only)."""

import securefl.transports.flower  # noqa: F401
