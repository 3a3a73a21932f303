"""CTU datasets: cutting encoder reconstructions into CTUs and storing them in HDF5."""
