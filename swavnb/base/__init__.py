"""The ground every other part stands on: paths and file names, errors, precision, the device,
atomic files, run-folder guards, torchrun, the command line."""
