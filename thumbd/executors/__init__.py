"""Where renders run: the Pool protocol, the local process pool, a Dask cluster."""
