"""The engine: data files, text encoding, training, decoding, tracking, sweeps, estimates and reports. It asks
tasks and model families through instdiv/engine/task.py and instdiv/engine/model.py and never names one."""
