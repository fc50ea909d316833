"""The utility corner every other package may use: errors, atomic writes, safetensors files, cache paths."""
