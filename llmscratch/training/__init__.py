"""Training: the config, the one Trainer loop for every task, AdamW, mixed precision, checkpoints, the metrics log.

config.py       TrainConfig: every field a --kebab-case flag; presets in TOML
trainer.py      Trainer and train(): the loop, evaluation, checkpoints, stop signals
optimizer.py    AdamW's state and step, the learning-rate schedule
precision.py    bf16 / fp16 compute on float32 master weights, fp16 loss scaling
checkpoint.py   save / load / convert / save_hf: directories of safetensors and JSON
metrics_log.py  metrics.jsonl (and TensorBoard events) as the run goes
"""
