"""Instrument drivers over pyvisa. Never imports torch, `sim` or `labpgt`.

`instruments.bench` opens a whole bench from a bench file (`Bench.open`,
`load_bench`); `signal_generator`, `spectrum_analyzer` and `bias_supply` hold
the drivers, one class per model family. See docs/instruments.md.
"""
