"""Models in and out of other libraries' formats: Hugging Face model directories (GPT-2, Llama, BERT).

ck = llmscratch.load("gpt2-dir")              # a Hugging Face directory loads like a checkpoint
llmscratch.save_hf(ck, "my-model")            # and any GPT-2-, Llama- or BERT-shaped model saves as one
"""

from .families import FAMILIES, Family, Rule, family_for, family_of
from .hf import HFModel, is_hf_dir, read_hf, write_hf

__all__ = ["FAMILIES", "Family", "HFModel", "Rule", "family_for", "family_of", "is_hf_dir", "read_hf", "write_hf"]
