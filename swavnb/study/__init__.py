"""The study: its plan of steps and how they run, the offline-node transfer, tables, claims, sweeps
and figures."""
