"""The accelerator in hardware: RTL (hardware/rtl), its simulation tops (hardware/tb) and the
Python glue that runs them under cocotb (docs/HARDWARE.md)."""
