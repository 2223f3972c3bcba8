"""The modelled sparse-training accelerator: its one specification (spec.json, read by spec.py),
the dataflow that turns operand masks into work items (dataflow.py), and the per-layer cost of
one training step on it (cost.py). `edgetune simulate` and the emulator's accounting both use
these; see docs/ARCHITECTURE.md and docs/SIMULATION.md."""
