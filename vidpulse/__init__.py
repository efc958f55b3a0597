"""The one place that wires vidpulse's parts into processes: ``vidpulse up|tracker|worker|api|migrate|simulate``."""
