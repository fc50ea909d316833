"""Train a small GPT on a backend of your choice, then sample from it.

python examples/quickstart.py                      # numpy, the embedded corpus, 500 steps (~30 s)
python examples/quickstart.py --backend torch --data shakespeare --max-iters 2000
"""

import argparse

import llmscratch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--backend", default="numpy", help=f"one of {llmscratch.available_backends()}")
parser.add_argument("--data", default="stdlib", help="stdlib | shakespeare | names | a text file")
parser.add_argument("--max-iters", type=int, default=500)
args = parser.parse_args()

# The nanoGPT CPU model: 4 layers, 4 heads, 128 channels, a 64-token context.
result = llmscratch.train(
    backend=args.backend,
    data=args.data,
    max_iters=args.max_iters,
    lr_decay_iters=args.max_iters,
    eval_interval=max(1, args.max_iters // 4),
)
print(f"validation loss after {args.max_iters} steps: {result.val_loss:.3f}")
print(result.sample(max_new_tokens=300, temperature=0.8, top_k=50))
