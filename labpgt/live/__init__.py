"""The live view: `labpgt view RUN` and ``--live`` on acquire, calibrate and train.

`labpgt.live.source` reads a run (acquisition file, calibration file, train run directory)
into plain arrays and needs nothing beyond h5py; `labpgt.live.dashboard` serves them as a Bokeh
page (the optional extra ``labpgt[live]``); `labpgt.live.launch` starts that page in a
separate process for ``--live``. The view only ever reads the run: it opens the file
read-only, without taking HDF5's file lock, and again on every change it sees, so it can
start late and never holds up the writer.
"""
