"""The labelgate command: the embedded pipeline, single services, dataset replay and the demo."""
