"""dnpc2otel: rebuild nested performance contexts of Parsl workflows from their logs, after the fact."""

__version__ = "0.1.0"

__all__ = ["__version__", "replay", "export"]


def __getattr__(name: str):
    # the API mirrors the CLI verbs; imported lazily so `import dnpc2otel` stays cheap
    if name == "replay":
        from .replay import replay

        return replay
    if name == "export":
        from .otlp import export

        return export
    raise AttributeError(name)
