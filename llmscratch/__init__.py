"""llmscratch: transformer language models from scratch (a GPT, an encoder classifier, an encoder–decoder),
written once against the Python Array API.

import llmscratch
result = llmscratch.train(backend="numpy", data="shakespeare", preset="shakespeare_char_cpu")
print(result.sample("ROMEO:"))
ckpt = llmscratch.load("out", backend="torch")      # or a Hugging Face directory (GPT-2, Llama, BERT)
llmscratch.save_hf(ckpt, "hf-dir")                  # for transformers' from_pretrained
llmscratch.quantize(ckpt, "int8")                   # its linear layers in int8, for decoding
lora = llmscratch.train(init_from="out", lora_rank=8)  # fine-tune LoRA adapters only;  merge_lora(lora)
clf = llmscratch.train(task="classify", data="reviews.csv");  clf.classify(["a text"])
"""

from .backends import Backend, available_backends, backend_names, get_backend, register_backend
from .generation import generate, sample_text
from .models import GPT, EncoderClassifier, GPTConfig, ModelConfig, Seq2Seq
from .training.checkpoint import Checkpoint, load, merge_lora, quantize, save_hf
from .training.config import TrainConfig
from .training.trainer import TrainResult, train
from .util.errors import LLMScratchError

__version__ = "0.1.0"

__all__ = [
    "GPT",
    "Backend",
    "Checkpoint",
    "EncoderClassifier",
    "GPTConfig",
    "LLMScratchError",
    "ModelConfig",
    "Seq2Seq",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "available_backends",
    "backend_names",
    "generate",
    "get_backend",
    "load",
    "merge_lora",
    "quantize",
    "register_backend",
    "sample_text",
    "save_hf",
    "train",
]
