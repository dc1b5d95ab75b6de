"""Entry point of the installed (frozen) app: the `raddraft` command with all its runtime subcommands.

The installed app carries no training stack: a subcommand that needs it (train, export, synth, evaluate,
finetune) ends with one line saying so instead of a traceback.
"""

import multiprocessing
import sys

TRAINING_ONLY = ("torch", "transformers", "peft", "optimum", "onnx", "training", "sacrebleu", "rouge_score",
                 "matplotlib", "accelerate", "safetensors")


def main() -> int:
    from raddraft.cli import main as raddraft_main

    try:
        return raddraft_main()
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in TRAINING_ONLY:
            raise
        print(f"raddraft: this command needs the training tools ({error.name}), which the installed app "
              "does not include; run it from a source checkout with the 'train' extra", file=sys.stderr)
        return 2


if __name__ == "__main__":
    multiprocessing.freeze_support()  # worker processes of a frozen app start through this executable
    sys.exit(main())
