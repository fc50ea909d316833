"""Benchmarks behind ``llmscratch bench``: attention kernels, training throughput, tokenizers.

Each measurement is one JSON-able record; ``report`` turns a list of them into JSON, a markdown table and
PNG plots. Timings are medians after warm-up, taken with ``backend.synchronize()`` on GPUs.
"""
