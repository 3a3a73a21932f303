"""CTU datasets: cutting encoder reconstructions into CTUs and storing them in HDF5."""

from codecnn.data import intra, restoration  # noqa: F401  (each registers its layout check with data.schema)
